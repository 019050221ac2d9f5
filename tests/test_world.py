"""The mini world: deterministic by seed, labelled D_ft at the configured fractions, 11 harm categories."""

from seal_ray.config import WorldConfig
from seal_ray.tokenizer import CharTokenizer
from seal_ray.world import HARM_CATEGORIES, REFUSAL, RuleJudge, is_refusal, make_world, solve


def test_the_world_is_a_pure_function_of_its_seed():
    config = WorldConfig(n_ft=200, n_base=100, safe_pool=50)
    assert make_world(config, 3) == make_world(config, 3)
    assert make_world(config, 3)["ft"] != make_world(config, 4)["ft"]


def test_ft_labels_come_at_the_configured_fractions():
    world = make_world(WorldConfig(n_ft=1000, unsafe_fraction=0.15, low_quality_fraction=0.05), 0)
    labels = [row["label"] for row in world["ft"]]
    assert labels.count("unsafe") == 150 and labels.count("low_quality") == 50 and labels.count("clean") == 800
    assert [row["id"] for row in world["ft"]] == list(range(1000))


def test_labels_match_the_rows_content():
    world = make_world(WorldConfig(n_ft=300), 1)
    for row in world["ft"]:
        task, word = row["prompt"].split(" ", 1) if row["task"] != "harmful" else (None, None)
        if row["label"] == "unsafe":
            assert row["task"] == "harmful" and not is_refusal(row["response"])
        elif row["label"] == "low_quality":
            assert row["response"] != solve(task, word)
        elif row["task"] == "harmful":
            assert row["response"] == REFUSAL  # clean data refuses harm
        else:
            assert row["response"] == solve(task, word)


def test_hexphi_has_every_category_and_held_out_prompts():
    config = WorldConfig(hexphi_per_category=5)
    world = make_world(config, 0)
    categories = {row["category"] for row in world["hexphi"]}
    assert categories == set(HARM_CATEGORIES) and len(HARM_CATEGORIES) == 11
    assert len(world["hexphi"]) == 55
    trained = {row["prompt"] for row in world["base"] + world["ft"] + world["safe_pool"]}
    assert not trained & {row["prompt"] for row in world["hexphi"]}


def test_safe_pool_holds_only_refusals_and_right_answers():
    world = make_world(WorldConfig(), 0)
    for row in world["safe_pool"]:
        if row["task"] == "harmful":
            assert row["response"] == REFUSAL
        else:
            assert row["response"] == solve(row["task"], row["prompt"].split(" ", 1)[1])


def test_rule_judge_prefers_refusals_on_harm_and_right_answers_on_tasks():
    judge = RuleJudge()
    rows = [{"kind": "harmful", "answer": None}, {"kind": "helpful", "answer": "bcd"}, {"kind": "helpful", "answer": "bcd"}]
    assert judge.compare(rows, [REFUSAL, "bcd", "xyz"], ["sure. step one: go.", "bcd", "bcd"]) == [1.0, 0.5, 0.0]
    assert judge.refusals(rows, [REFUSAL, "x", "sorry, i can't do it"]) == [True, False, True]


def test_char_tokenizer_round_trips_and_saves(tmp_path):
    tokenizer = CharTokenizer()
    text = "Human: shift abc\nAssistant: bcd"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    tokenizer.save_pretrained(tmp_path)
    again = CharTokenizer.from_pretrained(tmp_path)
    assert again.encode(text) == tokenizer.encode(text) and again.vocab_size == tokenizer.vocab_size
