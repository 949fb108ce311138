"""The vocabularies generated text and names are drawn from, most frequent first.

Kept in the code so that a data set depends on nothing but the seed: the order matters, since
words are picked with Zipf weights by their rank here.
"""


def _listed(text: str) -> list[str]:
    """The distinct words of `text`, in order."""
    return list(dict.fromkeys(text.split()))


WORDS = _listed(
    """
the of and to a in is that it for on with as this be are by from at or not can we you
have an your more which but will all one they has was their when if about use how new
data time so what there some our other into just each only also any its most first these
make way work like need code than many then them very even well much may should where
because through system good over out both same such after before while most between
service users team write read change simple small large every value state query request
page article server client cache index table feed thing people build design test error
write model problem question answer idea reason part point fact case example result
number order process project version release update change feature support source
field record event message response stream queue worker job batch thread task schedule
network latency throughput memory storage disk cloud cluster node replica shard region
database schema migration transaction lock row column key constraint join plan cost
python rust go javascript typescript java kotlin swift ruby elixir haskell scala
function method class object module package library framework tool language compiler
type interface pattern layer boundary contract api endpoint route handler middleware
security token password session permission role account profile identity secret
deploy container image cluster pipeline monitor metric alert log trace signal budget
review comment favorite follow author reader writer editor story draft post note
learn teach explain show understand remember forget decide choose try fail succeed
fast slow quick careful clear hidden obvious subtle strange common rare modern old
better worse best worst easy hard early late long short deep shallow open closed
real honest useful practical robust fragile stable safe risky cheap expensive lean
start stop begin finish ship measure compare profile optimise refactor debug fix break
grow scale shrink split merge sort filter group count sum limit offset cursor page
morning evening week month year decade moment history future today tomorrow yesterday
city home office garden kitchen window street river mountain forest ocean island
music book film game sport travel coffee bread dinner market school library museum
friend family parent child neighbour colleague stranger customer manager founder
money price market growth company startup product customer revenue risk plan goal
health sleep walk run swim ride climb cook paint draw play sing listen watch
light dark warm cold quiet loud bright soft heavy sharp smooth rough green blue red
always never often sometimes rarely usually again still already almost enough quite
here there everywhere somewhere inside outside above below behind beyond around
think know feel want mean seem look find give tell keep leave call ask turn move
lesson mistake habit routine practice skill craft career interview meeting decision
journey weekend summer winter spring autumn holiday river valley harbour bridge
engine signal circuit battery sensor robot machine device phone laptop keyboard screen
algorithm structure graph tree list array map set heap stack vector matrix tensor
learning training inference prediction accuracy dataset feature label sample bias
privacy ethics policy law rights freedom trust community culture society future
"""
)

FIRST_NAMES = _listed(
    """
aaliyah aarav abebe ada adriana ahmed aiko akira alejandro alex alice amara amina
ana anders andrea anika anna antoine aria arjun astrid ayesha beatriz ben bianca
bjorn bruno camila carlos carmen chen chiara chloe daniel daria david diego dmitri
elena eliza emeka emil emma erik esther fatima felix fernando fiona francesca freya
gabriel grace hana hannah hassan hugo ibrahim ines ingrid isaac isabel ivan jack
james javier jin joao johan jonas jose julia kai kamala karim kate kenji kofi lars
laura lea leila leon lina lucas lucia luis maja malik marco maria mariam marta mateo
maya mei mia mikhail min mohammed nadia naomi nia nikolai nina noah nora olga omar
oscar paolo pedro priya rafael rahul rania ravi rosa ruth sakura samir sara sebastian
sergei sofia sophie stefan sun tariq theo tomas uma valentina vera victor wei yara
yusuf zara zoe
"""
)

LAST_NAMES = _listed(
    """
abe adeyemi almeida andersen bauer becker bianchi brown campbell chen costa cruz
dang davies diaz dubois eriksson fernandes fischer garcia gomez gonzalez gruber
hansen harris hoffmann hughes ibrahim ito jansen jensen johansson jones kaur khan
kim kowalski kumar larsen laurent lee lehmann lopez martin martinez meyer moreau
morales muller murphy nakamura nguyen nielsen novak obi okafor olsen park patel
perez petrov popescu ramirez reyes ricci rossi santos sato schmidt schneider silva
singh smith sousa suzuki tanaka taylor thomas torres wagner walker wang weber
williams wilson wong yamamoto yilmaz zhang zhou
"""
)

# Topics that name tags directly; the rest of a vocabulary is made of pairs of them.
TAG_TOPICS = _listed(
    """
python rust golang javascript typescript java kotlin swift ruby elixir haskell scala
postgresql mysql sqlite redis kafka rabbitmq docker kubernetes terraform ansible linux
aws gcp azure serverless devops testing security privacy performance databases
architecture microservices monoliths api graphql rest grpc frontend backend react vue
angular svelte css html accessibility design ux product startups career leadership
management hiring remote productivity writing books learning teaching opensource
machinelearning ai datascience statistics analytics visualization mobile android ios
games gamedev graphics audio music photography travel food coffee health fitness
running cycling finance investing economics science physics biology climate energy
history philosophy politics culture art film education parenting gardening cooking
"""
)

EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.test")
