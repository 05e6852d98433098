"""Generated text corpora: a public one (for pretraining) and private ones split by client.

The public corpus is plain everyday prose (weather, cooking, travel, sport). The private corpus is
a different domain: messages each client (a person or an organisation, with its own style and
facts: name, phone number, account id, address) sends to a support desk. Both are pure functions
of their seed, so a corpus is identified by the seed and the generator's version.
"""

from __future__ import annotations

import numpy as np

CORPUS_VERSION = "1"

_PLACES = ["the coast", "the hills", "the old town", "the river", "the market", "the valley",
           "the station", "the park", "the harbour", "the lake", "the forest", "the square"]
_WEATHER = ["sunny", "cloudy", "windy", "rainy", "foggy", "cold", "warm", "bright", "grey"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_FOODS = ["soup", "bread", "rice", "pasta", "salad", "fish", "beans", "cake", "apples", "tea"]
_SPORTS = ["football", "tennis", "cycling", "running", "swimming", "rowing", "chess"]
_TEAMS = ["the blue team", "the red team", "the home side", "the visitors", "the club"]
_PUBLIC_TEMPLATES = [
    "On {day} the weather near {place} was {weather} and about {n} degrees.",
    "The forecast for {day} says it will be {weather} around {place}.",
    "To make {food}, heat the pan for {n} minutes and add a little salt.",
    "Serve the {food} with {food2} and let it rest for {n} minutes.",
    "The train to {place} leaves at {n} past the hour and takes {m} minutes.",
    "We walked from {place} to {place2} in {n} minutes on a {weather} {day}.",
    "In {sport} on {day}, {team} won by {n} points to {m}.",
    "The {sport} match at {place} drew {n} hundred people despite the {weather} sky.",
    "A bus runs every {n} minutes from {place} to {place2}.",
    "The museum near {place} opens at {n} and closes at {m} on {day}.",
    "She bought {n} kilos of {food} at {place} for {m} coins.",
    "The recipe needs {n} cups of flour, {m} eggs and some {food}.",
    "Platform {d} is closed on {day}, so trains to {place} use platform {d2}.",
    "Add {d} spoons of sugar and {d2} pinches of salt to the {food}.",
    "Room {d} is on floor {d2}, next to the stairs.",
    "Floor 0 is the ground floor; floors {d} and {d2} have offices and floor 0 has the cafe.",
    "The score was {d} to {d2} after {d3} rounds, then 0 to {d} in the last one.",
    "{first} {last} from {city} won the {sport} race on {day}.",
    "The new library on {street} in {city} opened on {day}.",
    "{first} {last} said the {food} at {place} was the best in {city}.",
    "Roads near {street} in {city} were closed for {n} hours.",
    "{greet}, the shop on {street} will close early on {day}. {sign}, the team.",
    "{greet}, thanks for the photos from {place}. Please call me when you can. {sign}, {first}.",
    "Dear {first}, I hope you are well. The meeting moved to {day}. Best wishes, {first2}.",
    "Notice: the office is closed since the update of the heating; please use the side door.",
    "We were charged for parking twice, so we asked the driver for the second ticket.",
    "The order of books arrived damaged, but the library sent a new box the next week.",
    "I cannot find my keys; I will check the car and then the garden.",
    "Can you explain how the new phone app works? My number changed last month.",
    "Please update the list of names for the school trip to {place} on {day}.",
    "The address of the new cafe is {n} {street}, {city}, next to the bank.",
    "The courier said the parcel would arrive on {day}, but it came a day late.",
    "My brother wants to open an account at the bank to save for a bike.",
    "The login screen of the game stays blank after the restart, so we read a book instead.",
    "Hi {first}, many thanks for your help with the invoice from the garage. Cheers, {first2}.",
]
_GREETS = ["Hi", "Hello", "Dear all", "Good morning", "Hey"]
_SIGNS = ["Thanks", "Best regards", "Cheers", "Kind regards", "Regards"]

_FIRST = ["Maria", "John", "Aisha", "Chen", "Lukas", "Sofia", "Omar", "Elena", "Kofi", "Yuki",
          "Pablo", "Anna", "Ravi", "Grace", "Ivan", "Lena", "Tariq", "Mei", "Noah", "Zara"]
_LAST = ["Lopez", "Smith", "Khan", "Wang", "Becker", "Rossi", "Haddad", "Petrova", "Mensah",
         "Tanaka", "Garcia", "Novak", "Patel", "Okafor", "Ivanov", "Fischer", "Ali", "Lin"]
_ORGS = ["Bright Dental", "Northwind Bakery", "Oak Lane Clinic", "Harbour Logistics",
         "Greenfield School", "Summit Legal", "Blue Pine Cafe", "Riverside Garage"]
_STREETS = ["Oak Street", "Mill Road", "King Avenue", "Elm Close", "Station Lane", "High Street",
            "Park Row", "Church Walk", "Bridge Road", "Cedar Drive"]
_CITIES = ["Leeds", "Porto", "Lyon", "Graz", "Turin", "Ghent", "Cork", "Bergen", "Brno", "Malmo"]
_GREETINGS = ["Hi", "Hello", "Dear support", "Good morning", "Hey there", "To whom it may concern"]
_SIGNOFFS = ["Thanks", "Best regards", "Cheers", "Kind regards", "Many thanks", "Regards"]
TOPICS = ["billing", "delivery", "technical", "account"]
_TOPIC_BODIES = {
    "billing": ["I was charged twice for my order this month.",
                "My last invoice shows the wrong amount.",
                "Please refund the extra fee on my bill.",
                "Can you explain the new charge on my statement?"],
    "delivery": ["My parcel has not arrived yet.",
                 "The courier left the box at the wrong door.",
                 "Please change the delivery date to next week.",
                 "The package arrived damaged."],
    "technical": ["The app crashes when I open my profile.",
                  "I cannot log in since the last update.",
                  "The router keeps dropping the connection.",
                  "My screen stays blank after the restart."],
    "account": ["Please update the address on my account.",
                "I want to close my old account.",
                "Can you add a second user to my account?",
                "Please change the phone number on file."],
}
_FACT_LINES = [
    "My account id is {account}.",
    "You can reach me on {phone}.",
    "I live at {address}.",
    "The account is under {name}, id {account}.",
    "Call me back on {phone} please.",
    "Send it to {address}.",
]

# Canary templates: a fixed prefix, then a secret of space-separated digits.
CANARY_PREFIXES = ["my PIN is", "the door code is", "my secret number is",
                   "the safe combination is", "my locker code is", "the alarm code is"]


def public_corpus(n_docs: int, seed: int) -> list[str]:
    """`n_docs` sentences of everyday public prose, deterministic in `seed`.

    Args:
        n_docs: how many sentences; seed: the spec's seed.
    """
    rng = np.random.default_rng([seed, 0xB0B])
    docs = []
    for _ in range(n_docs):
        t = _PUBLIC_TEMPLATES[rng.integers(len(_PUBLIC_TEMPLATES))]
        docs.append(t.format(
            day=_pick(rng, _DAYS), place=_pick(rng, _PLACES), place2=_pick(rng, _PLACES),
            weather=_pick(rng, _WEATHER), food=_pick(rng, _FOODS), food2=_pick(rng, _FOODS),
            sport=_pick(rng, _SPORTS), team=_pick(rng, _TEAMS),
            n=int(rng.integers(1, 100)), m=int(rng.integers(1, 100)),
            d=int(rng.integers(0, 10)), d2=int(rng.integers(0, 10)), d3=int(rng.integers(0, 10)),
            first=_pick(rng, _FIRST),
            last=_pick(rng, _LAST), city=_pick(rng, _CITIES), street=_pick(rng, _STREETS),
            first2=_pick(rng, _FIRST), greet=_pick(rng, _GREETS), sign=_pick(rng, _SIGNS)))
    return docs


def client_profile(rng: np.random.Generator, client: int) -> dict[str, str]:
    """One client's identity and style: a person or an organisation with its own facts.

    Args:
        rng: the corpus stream; client: the client's index (part of its account number).
    Returns:
        name, phone, account, address, greeting, signoff and two comma-separated topics.
    """
    person = rng.random() < 0.7
    name = f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}" if person else _pick(rng, _ORGS)
    digits = rng.integers(0, 10, size=7)
    return {
        "name": name,
        "phone": f"0{rng.integers(100, 1000)} {''.join(map(str, digits[:3]))} "
                 f"{''.join(map(str, digits[3:]))}",
        "account": f"AC-{client:03d}{rng.integers(1000, 10000)}",
        "address": f"{rng.integers(1, 200)} {_pick(rng, _STREETS)}, {_pick(rng, _CITIES)}",
        "greeting": _pick(rng, _GREETINGS),
        "signoff": _pick(rng, _SIGNOFFS),
        "topics": ",".join(rng.choice(TOPICS, size=2, replace=False)),
    }


def private_messages(profile: dict[str, str], n: int,
                     rng: np.random.Generator) -> list[tuple[str, int]]:
    """`n` support messages written by one client, each with its topic label.

    Args:
        profile: a `client_profile`; n: how many messages; rng: the corpus stream.
    Returns:
        (text, index into TOPICS) pairs; each is on the client's first topic with probability 0.7,
        else on a topic drawn from all TOPICS.
    """
    topics = profile["topics"].split(",")
    out = []
    for _ in range(n):
        topic = topics[0] if rng.random() < 0.7 else _pick(rng, TOPICS)
        fact = _pick(rng, _FACT_LINES).format(**profile)
        body = _pick(rng, _TOPIC_BODIES[topic])
        text = f"{profile['greeting']}, {body} {fact} {profile['signoff']}, {profile['name']}."
        out.append((text, TOPICS.index(topic)))
    return out


def canary_text(prefix: str, secret: str) -> str:
    """A canary sentence: the template's prefix and the secret's digits, space-separated.

    Args:
        prefix: the template's prefix; secret: the secret, a string of digits.
    """
    return f"{secret_text(prefix, secret)}."


def secret_text(prefix: str, secret: str) -> str:
    """The template's prefix and the secret's digits, space-separated: the part of a canary
    sentence that exposure scores.

    Args:
        prefix: the template's prefix; secret: the secret, a string of digits.
    """
    return f"{prefix} {' '.join(secret)}"


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]
