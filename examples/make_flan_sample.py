"""Write examples/flan_sample/: a small FLAN v2-shaped prompt collection, deterministic, written for tracegen.

Every prompt is generated here from word lists and templates (nothing is copied from FLAN); the targets are
computed, so they are correct. The sample exercises every planning rule:

* all four submixes plus Dialog rows (skipped), zero-shot and few-shot, opt and noopt templates;
* Flan2021 multiple-choice rows with several option headers (``OPTIONS:``, ``Choose your answer from:``,
  ``Pick from:``, ``Possible answers:``, ``Select from the following.``) and generative tasks whose opt and
  noopt templates are the same (no options);
* Big-Bench tasks inside T0 (``bigbench_…``, ``bbh_…``);
* one NIv2 task with 340 zero-shot rows (more than the 300 cap);
* a few exact duplicate rows;
* three formats: JSON lines, Parquet (several row groups) and the seqio spelling with underscore columns
  (``_task_source``, ``_task_name``, ``_template_type``, ``_template_idx``).

Run from the repository root: ``python examples/make_flan_sample.py`` (rewrites the files in place).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "flan_sample"
SEED = 20240501

NAMES = ["Maya", "Tomas", "Aiko", "Priya", "Lena", "Omar", "Jonah", "Sofia", "Ravi", "Elena", "Kofi", "Mei"]
ITEMS = ["apples", "stickers", "marbles", "pencils", "cookies", "stamps", "seashells", "books"]
PLACES = ["library", "harbor", "bakery", "museum", "train station", "garden", "market", "school gym"]
ANIMALS = ["a heron", "two goats", "a tabby cat", "a beagle", "three ducks", "a pony", "a tortoise"]
ACTIONS = [
    "is reading a map",
    "is repairing a bicycle",
    "is painting a fence",
    "is carrying groceries",
    "is feeding pigeons",
    "is tuning a guitar",
    "is sweeping the floor",
    "is watering plants",
]
PRODUCTS = ["blender", "backpack", "desk lamp", "phone case", "kettle", "rain jacket", "keyboard", "tent"]
GOOD = [
    "works perfectly",
    "exceeded my expectations",
    "is sturdy and well made",
    "arrived early and works great",
    "is worth every penny",
    "is easy to use",
]
BAD = [
    "broke after two days",
    "stopped working within a week",
    "feels cheap and flimsy",
    "arrived scratched and missing parts",
    "is a waste of money",
    "overheats constantly",
]
TOPICS = {
    "World": [
        "Leaders of three nations met in {city} to sign a river treaty",
        "Flooding displaced thousands of residents near {city}",
    ],
    "Sports": [
        "{city} rallied in the final minute to win the regional cup",
        "A young sprinter from {city} broke the national record",
    ],
    "Business": [
        "A shipping firm based in {city} reported record quarterly profits",
        "Shares of a {city} bakery chain rose after a merger",
    ],
    "Sci/Tech": [
        "Engineers in {city} unveiled a battery that charges in five minutes",
        "A telescope built near {city} spotted a new comet",
    ],
}
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tallinn", "Perth", "Bergen", "Cusco", "Accra", "Hanoi"]
SCIENCE = [
    ("Which of these is a source of light?", ["the Sun", "the Moon", "a mirror", "a window"], 0),
    ("What do plants need to make food?", ["sunlight", "sand", "salt", "smoke"], 0),
    ("Which state of matter has a fixed shape?", ["solid", "liquid", "gas", "steam"], 0),
    ("Which tool measures temperature?", ["a thermometer", "a ruler", "a scale", "a compass"], 0),
    ("What force pulls objects toward Earth?", ["gravity", "friction", "magnetism", "wind"], 0),
    ("Which animal is a mammal?", ["a whale", "a shark", "a trout", "a frog"], 0),
    ("What happens to water at 0 degrees Celsius?", ["it freezes", "it boils", "it glows", "it burns"], 0),
    ("Which planet is closest to the Sun?", ["Mercury", "Mars", "Jupiter", "Neptune"], 0),
    ("What gas do people breathe out?", ["carbon dioxide", "helium", "neon", "argon"], 0),
    ("Which organ pumps blood?", ["the heart", "the lungs", "the liver", "the skin"], 0),
    ("What makes a rainbow appear?", ["sunlight through raindrops", "thunder", "wind", "fog at night"], 0),
    ("Which material conducts electricity best?", ["copper", "rubber", "wood", "glass"], 0),
    ("What do bees collect from flowers?", ["nectar", "seeds", "bark", "leaves"], 0),
    ("Which is a renewable energy source?", ["wind", "coal", "oil", "natural gas"], 0),
    ("What causes day and night?", ["Earth spinning", "the Moon moving", "clouds", "the seasons"], 0),
    ("Which sense do ears provide?", ["hearing", "taste", "smell", "sight"], 0),
]
DE_SUBJECTS = [
    ("Der Hund", "The dog"),
    ("Die Katze", "The cat"),
    ("Mein Bruder", "My brother"),
    ("Unsere Lehrerin", "Our teacher"),
    ("Das Kind", "The child"),
]
DE_VERBS = [
    ("schläft", "is sleeping"),
    ("spielt", "is playing"),
    ("wartet", "is waiting"),
    ("liest", "is reading"),
]
DE_PLACES = [
    ("im Garten", "in the garden"),
    ("am Strand", "on the beach"),
    ("in der Küche", "in the kitchen"),
    ("vor dem Museum", "in front of the museum"),
]
CAPITALS = [
    ("France", "Paris"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Norway", "Oslo"),
    ("Chile", "Santiago"),
    ("Ghana", "Accra"),
    ("Spain", "Madrid"),
    ("India", "New Delhi"),
    ("Poland", "Warsaw"),
    ("Vietnam", "Hanoi"),
    ("Estonia", "Tallinn"),
    ("Australia", "Canberra"),
    ("Ecuador", "Quito"),
]
GOALS = [
    ("keep bread fresh longer", "store it in a sealed bag", "leave it open on the counter"),
    ("dry wet shoes", "stuff them with newspaper", "put them in the freezer"),
    ("remove a stuck jar lid", "run the lid under hot water", "pour oil on your hands"),
    ("stop a squeaky door", "oil the hinges", "paint the handle"),
    ("cool a hot drink quickly", "pour it into a wide cup", "cover it with a lid"),
    ("find a small lost screw", "sweep slowly with a magnet", "turn off the lights"),
    ("keep a cut flower fresh", "trim the stem and change the water", "put it in a dark drawer"),
    ("untangle a necklace", "use two pins on the knot", "pull both ends hard"),
    ("clean a cast iron pan", "scrub it with salt and oil", "soak it overnight in soapy water"),
    ("stop glasses fogging up", "rub a drop of soap on the lenses", "breathe on them first"),
]
ES = {
    "red": "rojo",
    "house": "casa",
    "water": "agua",
    "book": "libro",
    "dog": "perro",
    "moon": "luna",
    "bread": "pan",
    "green": "verde",
    "window": "ventana",
    "friend": "amigo",
}


def sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(NAMES)} {rng.choice(ACTIONS)} near the {rng.choice(PLACES)} with {rng.choice(ANIMALS)}."
    )


def row(inputs: str, targets: str, source: str, task: str, template: str) -> dict[str, str]:
    return {
        "inputs": inputs,
        "targets": targets,
        "task_source": source,
        "task_name": task,
        "template_type": template,
    }


def few_shot(make: Callable[[], tuple[str, str]], k: int = 2) -> tuple[str, str]:
    shots = [make() for _ in range(k + 1)]
    demo = "\n\n".join(f"{q}\n{a}" for q, a in shots[:-1])
    return f"{demo}\n\n{shots[-1][0]}", shots[-1][1]


# ---- CoT ---------------------------------------------------------------------------------------------------
def cot_rows(rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def gsm() -> tuple[str, str]:
        name, friend = rng.sample(NAMES, 2)
        item = rng.choice(ITEMS)
        a, b = rng.randint(5, 40), rng.randint(2, 20)
        c = rng.randint(1, a)
        q = (
            f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to {friend}. "
            f"How many {item} does {name} have now? Let's think first. Chain of thought:"
        )
        t = (
            f"{name} starts with {a}. After buying {b} more, {name} has {a} + {b} = {a + b}. "
            f"Giving away {c} leaves {a + b} - {c} = {a + b - c}. The answer is {a + b - c}."
        )
        return q, t

    def esnli() -> tuple[str, str]:
        who, act = rng.choice(NAMES), rng.choice(ACTIONS)
        kind = rng.choice(["yes", "no", "it is not possible to tell"])
        hyp = {
            "yes": f"Someone {act}.",
            "no": f"{who} is asleep at home.",
            "it is not possible to tell": f"{who} is waiting for a friend.",
        }[kind]
        q = (
            f'Premise: "{who} {act} near the {rng.choice(PLACES)}."\nHypothesis: "{hyp}"\n'
            "Is the hypothesis entailed by the premise?\n"
            "Options:\n- yes\n- it is not possible to tell\n- no\n"
            "Let's be as accurate as possible and think first."
        )
        return q, f"The premise describes what {who} is doing, so the answer is: {kind}."

    def aqua() -> tuple[str, str]:
        speed, hours = rng.randint(30, 90), rng.randint(2, 6)
        right = speed * hours
        opts = sorted({right, right + 10, right - 10, right + 25, right * 2})[:5]
        letters = "ABCDE"
        q = (
            f"A train travels at {speed} km per hour for {hours} hours. How far does it go?\nOptions:\n"
            + "\n".join(f"({letters[i]}) {o} km" for i, o in enumerate(opts))
            + "\nStream of consciousness first, then make a decision:"
        )
        return (
            q,
            f"Distance is speed times time: {speed} x {hours} = {right} km. "
            f"The answer is ({letters[opts.index(right)]}).",
        )

    def creak() -> tuple[str, str]:
        animal = rng.choice(["Penguins", "Camels", "Owls", "Dolphins", "Bees"])
        fact, ok = rng.choice(
            [
                ("can fly long distances", animal in ("Owls", "Bees")),
                ("live only in deserts", False),
                ("need oxygen to survive", True),
            ]
        )
        q = f'Claim: "{animal} {fact}."\nIs the claim above correct?\nOptions:\n- yes\n- no\n'
        q += "Chain of thought:"
        return (
            q,
            f"{'Yes' if ok else 'No'}, based on what is known about {animal.lower()}. "
            f"The answer is {'yes' if ok else 'no'}.",
        )

    for task, make, template, count in [
        ("cot_gsm8k", gsm, "zs_noopt", 40),
        ("cot_esnli", esnli, "zs_opt", 25),
        ("stream_aqua", aqua, "zs_opt", 20),
        ("cot_creak", creak, "zs_opt", 15),
    ]:
        for _ in range(count):
            q, t = make()
            out.append(row(q, t, "CoT", task, template))
        for _ in range(4):
            q, t = few_shot(make)
            out.append(row(q, t, "CoT", task, template.replace("zs_", "fs_")))
    return out


# ---- NIv2 --------------------------------------------------------------------------------------------------
def niv_rows(rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def count_letter() -> tuple[str, str]:
        s = sentence(rng)
        letter = rng.choice("pstbcwg")
        n = sum(1 for w in s.lower().replace(".", "").split() if w.startswith(letter))
        head = rng.choice(
            [
                "Definition: In this task, you need to count the number of words in a sentence that start "
                "with the given letter. Answer with numbers and not words.\nInput: Sentence: "
                f"'{s}'. How many words start with the letter '{letter}' in the sentence.\nOutput:",
                "Detailed Instructions: Count the words in the sentence that begin with the letter "
                f"'{letter}'. Give the answer as a number.\nQ: Sentence: '{s}'\nA:",
            ]
        )
        return head, str(n)

    def reverse() -> tuple[str, str]:
        s = sentence(rng).rstrip(".")
        return (
            f"In this task, you are given a sentence. Reverse the order of its words and output the result."
            f"\n\n{s}",
            " ".join(reversed(s.split())),
        )

    def review() -> tuple[str, str]:
        good = rng.random() < 0.5
        text = f"This {rng.choice(PRODUCTS)} {rng.choice(GOOD if good else BAD)}."
        return (
            f'Teacher: Given a product review, classify it as "POS" if it is positive and "NEG" if it is '
            f"negative.\nTeacher: Now, understand the problem? Solve this instance: {text}\nStudent:",
            "POS" if good else "NEG",
        )

    def translate() -> tuple[str, str]:
        words = rng.sample(sorted(ES), 3)
        return (
            "You will be given a list of English words. Translate each word into Spanish and keep the order."
            f"\n\nInput: {', '.join(words)}\nOutput:",
            ", ".join(ES[w] for w in words),
        )

    def question() -> tuple[str, str]:
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        return (
            f"Given a fact, create a question that can be answered using the fact.\n\nFact: {name} works "
            f"at the {place} on weekends.",
            f"Where does {name} work on weekends?",
        )

    for task, make, count in [
        ("task1001_count_words_starting_with_letter", count_letter, 340),
        ("task1002_reverse_words_in_sentence", reverse, 24),
        ("task1003_product_review_polarity", review, 30),
        ("task1004_english_spanish_word_translation", translate, 20),
        ("task1005_fact_to_question", question, 18),
    ]:
        for i in range(count):
            q, t = make()
            out.append(row(q, t, "NIv2", task, "zs_opt" if i % 2 else "zs_noopt"))
        for i in range(3):
            q, t = few_shot(make)
            out.append(row(q, t, "NIv2", task, "fs_opt" if i % 2 else "fs_noopt"))
    return out


# ---- Flan2021 ----------------------------------------------------------------------------------------------
def flan_rows(rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def sst2(opt: bool) -> tuple[str, str]:
        good = rng.random() < 0.5
        text = f"the {rng.choice(['film', 'play', 'novel', 'album'])} {rng.choice(GOOD if good else BAD)}"
        label = "positive" if good else "negative"
        if opt:
            return (
                f"Review: {text}\nIs this movie review sentence negative or positive?\n"
                "OPTIONS:\n- negative\n- positive",
                label,
            )
        return f"Review: {text}\nIs this movie review sentence negative or positive?", label

    def rte(opt: bool) -> tuple[str, str]:
        who, act = rng.choice(NAMES), rng.choice(ACTIONS)
        yes = rng.random() < 0.5
        hyp = f"{who} {act}." if yes else f"{who} is asleep."
        base = (
            f"{who} {act} near the {rng.choice(PLACES)}.\n\n"
            f"Based on that paragraph can we conclude that this sentence is true?\n{hyp}"
        )
        if opt:
            return base + "\n\nChoose your answer from:\n(a). Yes\n(b). No", "(a). Yes" if yes else "(b). No"
        return base, "Yes" if yes else "No"

    def arc(opt: bool) -> tuple[str, str]:
        q, choices, right = rng.choice(SCIENCE)
        shuffled = choices[:]
        rng.shuffle(shuffled)
        if opt:
            return f"{q}\nPick from:\n" + "\n".join(f"- {c}" for c in shuffled), choices[right]
        how = rng.choice(
            ["Answer the following question: {}", "Question: {}\nAnswer:", "{} Give a short answer."]
        )
        return how.format(q), choices[right]

    def ag_news(opt: bool) -> tuple[str, str]:
        topic = rng.choice(sorted(TOPICS))
        text = rng.choice(TOPICS[topic]).format(city=rng.choice(CITIES))
        if opt:
            return (
                f"{text}.\nWhat is this text about?\nPossible answers:\n[1]. World\n[2]. Sports\n"
                "[3]. Business\n[4]. Science/Tech"
            ), topic
        return f"{text}.\n\nWhat best summarizes the content of the above article?", topic

    def piqa(opt: bool) -> tuple[str, str]:
        goal, good, bad = rng.choice(GOALS)
        if opt:
            a, b = (good, bad) if rng.random() < 0.5 else (bad, good)
            return f"How do you do this: {goal}\n\nSelect from the following.\n- {a}\n- {b}", good
        return f"Write the steps to {goal}.", good

    def summarize(opt: bool) -> tuple[str, str]:  # generative: opt and noopt look the same
        city, topic = rng.choice(CITIES), rng.choice(sorted(TOPICS))
        text = rng.choice(TOPICS[topic]).format(city=city)
        return (
            f"Article: {text}. Local officials said more details would follow next week, and residents "
            f"gathered to discuss the news.\n\nWrite a one-sentence summary of the article."
        ), f"{text}."

    def translate(opt: bool) -> tuple[str, str]:
        (sde, sen), (vde, ven), (pde, pen) = (
            rng.choice(DE_SUBJECTS),
            rng.choice(DE_VERBS),
            rng.choice(DE_PLACES),
        )
        how = rng.choice(['Translate "{}" from German to English.', 'How is "{}" said in English?'])
        return how.format(f"{sde} {vde} {pde}."), f"{sen} {ven} {pen}."

    def trivia(opt: bool) -> tuple[str, str]:
        country, capital = rng.choice(CAPITALS)
        how = rng.choice(
            ["Answer this question.\n\n{}", "Q: {}\nA:", "Trivia question: {}\nAnd the answer is?"]
        )
        return how.format(f"What is the capital city of {country}?"), capital

    for task, make, count in [
        ("glue/sst2:2.0.0", sst2, 30),
        ("super_glue/rte:1.0.2", rte, 30),
        ("ai2_arc/ARC-Easy:1.0.0", arc, 26),
        ("ag_news_subset:1.0.0", ag_news, 26),
        ("piqa:1.0.0", piqa, 24),
        ("cnn_dailymail:3.4.0", summarize, 30),
        ("wmt16_translate/de-en:1.0.0", translate, 24),
        ("trivia_qa/rc:1.1.0", trivia, 24),
    ]:
        for i in range(count):
            opt = i % 2 == 0
            q, t = make(opt)
            out.append(row(q, t, "Flan2021", task, "zs_opt" if opt else "zs_noopt"))
        for i in range(3):
            opt = i % 2 == 0
            q, t = few_shot(functools.partial(make, opt))
            out.append(row(q, t, "Flan2021", task, "fs_opt" if opt else "fs_noopt"))
    for dup in out[:3]:  # exact duplicates, as real dumps have
        out.append(dict(dup))
    return out


# ---- T0 (written in the seqio spelling) ------------------------------------------------------------
def t0_rows(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def qa() -> tuple[str, str]:
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        return (
            f"Extract the answer to the question from the following context.\nQuestion: Where does {name} "
            f"volunteer?\nContext: Every Saturday {name} volunteers at the {place}, helping visitors.",
            f"the {place}",
        )

    def polarity() -> tuple[str, str]:
        good = rng.random() < 0.5
        return (
            f"Title: {rng.choice(['Great buy', 'Disappointed', 'Mixed feelings'])}\nReview: This "
            f"{rng.choice(PRODUCTS)} {rng.choice(GOOD if good else BAD)}.\nIs this product review positive?",
            "Yes" if good else "No",
        )

    def cos_e() -> tuple[str, str]:
        q, choices, right = rng.choice(SCIENCE)
        return (
            f"Question: {q}\nOptions:\n"
            + "\n".join(f"- {c}" for c in choices)
            + '\nThe answer is "'
            + choices[right]
            + '" because',
            "that is what the question describes",
        )

    def title() -> tuple[str, str]:
        city, name = rng.choice(CITIES), rng.choice(NAMES)
        return (
            f"Generate a title for this plot: {name}, a retired sailor in {city}, restores an old boat and "
            "sets out to find a long-lost sister.",
            f"The Last Voyage from {city}",
        )

    def rating() -> tuple[str, str]:
        stars = rng.randint(1, 5)
        text = rng.choice(GOOD if stars >= 4 else BAD)
        return (
            f'Given this review: "The app {text}."\nWould you recommend this app to a friend? Not at all, '
            "No, Maybe, Yes, or Definitely?",
            ["Not at all", "No", "Maybe", "Yes", "Definitely"][stars - 1],
        )

    def deduction() -> tuple[str, str]:
        a, b, c = rng.sample(NAMES, 3)
        return (f"{a} finished before {b}. {c} finished after {b}. Who finished last?", c)

    def date() -> tuple[str, str]:
        day = rng.randint(2, 27)
        return (
            f"Today is March {day}, 2021. What is the date tomorrow in MM/DD/YYYY?",
            f"03/{day + 1:02d}/2021",
        )

    for task, make, count in [
        ("adversarial_qa_dbidaf_answer_the_following_q", qa, 44),
        ("amazon_polarity_Is_this_review", polarity, 44),
        ("cos_e_v1.11_explain_why_human", cos_e, 40),
        ("duorc_SelfRC_title_generation", title, 40),
        ("app_reviews_convert_to_rating", rating, 40),
        ("bigbench_logical_deduction_three_objects", deduction, 15),
        ("bbh_date_understanding", date, 15),
    ]:
        for i in range(count):
            q, t = make()
            out.append(
                {
                    "inputs": q,
                    "targets": t,
                    "_task_source": "P3",
                    "_task_name": task,
                    "_template_type": "zs_opt" if i % 2 else "zs_noopt",
                    "_template_idx": i % 4,
                }
            )
        for i in range(3):
            q, t = few_shot(make)
            out.append(
                {
                    "inputs": q,
                    "targets": t,
                    "_task_source": "P3",
                    "_task_name": task,
                    "_template_type": "fs_noopt",
                    "_template_idx": i,
                }
            )
    return out


def dialog_rows(rng: random.Random) -> list[dict[str, str]]:
    out = []
    for i in range(20):
        name = rng.choice(NAMES)
        turns = (
            f"[user] Hi, can you recommend a museum in {rng.choice(CITIES)}? [assistant] Sure, the city "
            f"museum is popular. [user] Is it open on Mondays, {name} asks?"
        )
        out.append(
            row(
                turns,
                "It is closed on Mondays.",
                "Dialog",
                "wiki_dialog" if i % 2 else "qrecc",
                "zs_noopt" if i % 3 else "fs_noopt",
            )
        )
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=128, compression="zstd")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    write_jsonl(OUT / "cot_submix.jsonl", cot_rows(rng))
    write_parquet(OUT / "niv2_submix.parquet", niv_rows(rng))
    write_jsonl(OUT / "flan2021_submix.jsonl", flan_rows(rng))
    write_parquet(OUT / "t0_submix_seqio.parquet", t0_rows(rng))
    write_jsonl(OUT / "dialog_submix.jsonl", dialog_rows(rng))


if __name__ == "__main__":
    main()
