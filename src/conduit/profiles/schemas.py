from conduit.platform.schemas import WireModel


class ProfileRead(WireModel):
    username: str
    bio: str
    image: str
    following: bool


class ProfileEnvelope(WireModel):
    profile: ProfileRead
