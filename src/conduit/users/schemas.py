from typing import Annotated

from pydantic import EmailStr, Field, StringConstraints

from conduit.platform.schemas import InputModel, Storable, WireModel
from conduit.users.models import EMAIL_MAX_LENGTH, USERNAME_MAX_LENGTH

REFRESH_TOKEN_MAX_LENGTH = 256
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
BIO_MAX_LENGTH = 2_000
IMAGE_MAX_LENGTH = 2_048

# Letters, digits, underscores, dots and hyphens, starting with a letter, digit or underscore:
# usernames appear in URLs (/profiles/<username>) and must stay readable there.
Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=USERNAME_MAX_LENGTH,
        pattern=r"^\w[\w.-]*$",
    ),
    Storable,
]
Email = Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH)]
Password = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH), Storable
]
Bio = Annotated[str, StringConstraints(max_length=BIO_MAX_LENGTH), Storable]
ImageUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=IMAGE_MAX_LENGTH), Storable
]


class NewUser(InputModel):
    username: Username
    email: Email
    password: Password


class LoginUser(InputModel):
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=EMAIL_MAX_LENGTH),
        Storable,
    ]
    password: Annotated[
        str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH), Storable
    ]


class UpdateUser(InputModel):
    """Only the fields present change. Front ends send `null` (or an empty password) for
    fields the user left alone, so those mean "unchanged"; `null` bio or image clears it."""

    username: Username | None = None
    email: Email | None = None
    password: Annotated[str, StringConstraints(max_length=PASSWORD_MAX_LENGTH), Storable] | None = (
        None
    )
    bio: Bio | None = None
    image: ImageUrl | None = None


class UserRefreshToken(InputModel):
    refresh_token: Annotated[
        str, StringConstraints(min_length=1, max_length=REFRESH_TOKEN_MAX_LENGTH), Storable
    ]


class NewUserEnvelope(InputModel):
    user: NewUser


class LoginUserEnvelope(InputModel):
    user: LoginUser


class UpdateUserEnvelope(InputModel):
    user: UpdateUser


class UserRefreshTokenEnvelope(InputModel):
    user: UserRefreshToken


class UserRead(WireModel):
    email: str
    token: str
    username: str
    bio: str
    image: str


class UserEnvelope(WireModel):
    user: UserRead


class SignedInUserRead(UserRead):
    """The user with both tokens of a new session: `token` for requests, `refreshToken` to get
    the next pair once it expires."""

    refresh_token: str


class SignedInUserEnvelope(WireModel):
    user: SignedInUserRead
