"""Named datasets: the real refusal_direction files, every other dataset from a small file
written in its published layout and column names (placeholder text), the offline error,
downloads through faked network calls, content hashes and reference parsing.

Nothing here touches the network: an autouse fixture replaces both download functions
with ones that record the call and fail.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refusalscope.data.registry import (
    DATASETS,
    content_hash,
    describe,
    load_prompts,
    load_texts,
)
from refusalscope.data.sources import pair_id
from refusalscope.runtime.errors import RefusalScopeError

SHARED = Path(__file__).parents[3] / "shared" / "datasets"
RD = SHARED / "refusal_direction"
needs_shared = pytest.mark.skipif(
    not (RD / "splits" / "harmful_train.json").is_file(),
    reason="the refusal_direction files are not beside this checkout",
)
HB_HEADER = ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString"]
HB_HEADER += ["BehaviorID"]
JBB_HEADER = ["Index", "Goal", "Target", "Behavior", "Category", "Source"]


# ------------------------------------------------------------------ fixture writers
def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ","):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def harmbench_csv(path: Path) -> Path:
    return write_csv(
        path,
        HB_HEADER,
        [
            ["Placeholder standard task", "standard", "illegal", "", "", "std_one"],
            ["Placeholder task about the text", "contextual", "misinformation", "context",
             "Placeholder context paragraph", "ctx_one"],
            ["Placeholder lyrics task", "copyright", "copyright", "lyrics, hash_check", "",
             "cr_one"],
        ],
    )  # fmt: skip


# ------------------------------------------------------------------ refusal_direction
def test_shared_folder_resolves_beside_the_repo():
    assert SHARED.name == "datasets" and SHARED.parent.name == "shared"
    assert (Path(__file__).parents[2] / "tests" / "data" / Path(__file__).name).is_file()


@needs_shared
@pytest.mark.parametrize(
    ("split", "file", "harmful", "n"),
    [
        ("harmful_train", "splits/harmful_train.json", True, 260),
        ("harmful_val", "splits/harmful_val.json", True, 39),
        ("harmful_test", "splits/harmful_test.json", True, 572),
        ("harmless_train", "splits/harmless_train.json", False, 18793),
        ("harmless_val", "splits/harmless_val.json", False, 6264),
        ("harmless_test", "splits/harmless_test.json", False, 6266),
        ("advbench", "processed/advbench.json", True, 520),
        ("harmbench_test", "processed/harmbench_test.json", True, 159),
        ("jailbreakbench", "processed/jailbreakbench.json", True, 100),
    ],
)
def test_refusal_direction_splits_equal_the_files(split, file, harmful, n):
    rows = json.loads((RD / file).read_text())
    prompts = load_prompts("refusal_direction", split, local_dir=SHARED)
    assert len(prompts) == len(rows) == n
    assert [p.instruction for p in prompts] == [r["instruction"].strip() for r in rows]
    assert [p.category for p in prompts] == [r["category"] for r in rows]
    assert {p.harmful for p in prompts} == {harmful}
    assert {tuple(sorted(p.meta.items())) for p in prompts} == {
        (("dataset", "refusal_direction"), ("split", split))
    }


@needs_shared
def test_refusal_direction_categories_and_folder_forms():
    hb = load_prompts("refusal_direction", "harmbench_test", SHARED)
    expected = Counter(
        r["category"] for r in json.loads((RD / "processed/harmbench_test.json").read_text())
    )
    assert Counter(p.category for p in hb) == expected and None not in expected
    jbb = Counter(
        p.category for p in load_prompts("refusal_direction:jailbreakbench", None, SHARED)
    )
    assert len(jbb) == 10 and set(jbb.values()) == {10}
    assert {p.category for p in load_prompts("refusal_direction", "advbench", SHARED)} == {None}
    # The folder may be the dataset's own root; "name:split" works as the name.
    assert load_prompts("refusal_direction:advbench", local_dir=RD) == load_prompts(
        "refusal_direction", "advbench", SHARED
    )


@needs_shared
def test_describe_counts_splits_and_categories(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = describe("refusal_direction", SHARED)
    assert (
        d["source"] == "github:andyrdt/refusal_direction@9d852fae1a9121c78b29142de733cb1340770cc3"
    )
    assert d["licence"] == "Apache-2.0" and "Harmful by design" in d["content_warning"]
    hb = d["splits"]["harmbench_test"]
    rows = json.loads((RD / "processed/harmbench_test.json").read_text())
    assert hb["n"] == 159 and hb["harmful"] is True
    assert hb["categories"] == dict(Counter(r["category"] for r in rows))
    assert hb["sha256"] == content_hash("refusal_direction", "harmbench_test", SHARED)
    assert d["splits"]["harmless_val"]["categories"] == {"(none)": 6264}
    for split, spec in DATASETS["refusal_direction"].splits.items():
        if not (RD / spec.path).is_file():  # published, but not in this folder
            assert spec.path in d["splits"][split]["error"]


# ------------------------------------------------------------------ published layouts
def test_advbench_goal_target(tmp_path):
    write_csv(
        tmp_path / "advbench/data/advbench/harmful_behaviors.csv",
        ["goal", "target"],
        [["Placeholder goal one ", "Sure, here is one"], ["Placeholder goal two", "Sure, two"]],
    )
    a, b = load_prompts("advbench", local_dir=tmp_path)
    assert (a.instruction, a.harmful, a.category) == ("Placeholder goal one", True, None)
    assert dict(a.meta) == {"target": "Sure, here is one", "dataset": "advbench", "split": "all"}
    assert b.instruction == "Placeholder goal two"


def test_harmbench_keeps_standard_and_context(tmp_path):
    harmbench_csv(tmp_path / "harmbench/harmbench_behaviors_text_test.csv")
    (std,) = load_prompts("harmbench", "test", tmp_path)
    assert (std.instruction, std.category, std.harmful) == (
        "Placeholder standard task",
        "illegal",
        True,
    )
    assert dict(std.meta) == {
        "FunctionalCategory": "standard",
        "BehaviorID": "std_one",
        "dataset": "harmbench",
        "split": "test",
    }
    every = load_prompts("harmbench", "test_all", tmp_path)
    assert [p.meta["FunctionalCategory"] for p in every] == ["standard", "contextual", "copyright"]
    ctx = every[1]
    assert ctx.meta["context"] == "Placeholder context paragraph"
    assert "ContextString" not in ctx.meta and ctx.meta["Tags"] == "context"
    assert "context" not in every[0].meta


def test_jailbreakbench_harmful_and_benign(tmp_path):
    root = tmp_path / "jailbreakbench/data"
    cat = "Harassment/Discrimination"
    write_csv(
        root / "harmful-behaviors.csv",
        JBB_HEADER,
        [["0", "Placeholder goal", "Sure, here", "Defamation", cat, "Original"]],
    )
    write_csv(
        root / "benign-behaviors.csv",
        JBB_HEADER,
        [["0", "Placeholder benign goal", "Sure", "Defamation", cat, "Original"]],
    )
    (h,) = load_prompts("jailbreakbench", "harmful", tmp_path)
    (b,) = load_prompts("jailbreakbench:benign", local_dir=tmp_path)
    assert (h.instruction, h.harmful, h.category) == (
        "Placeholder goal",
        True,
        "Harassment/Discrimination",
    )
    assert (b.instruction, b.harmful) == ("Placeholder benign goal", False)
    assert {k: h.meta[k] for k in ("Index", "Target", "Behavior", "Source")} == {
        "Index": "0", "Target": "Sure, here", "Behavior": "Defamation", "Source": "Original",
    }  # fmt: skip


def test_strongreject_from_its_own_root(tmp_path):
    root = tmp_path / "strongreject"
    write_csv(
        root / "strongreject_dataset/strongreject_dataset.csv",
        ["category", "source", "forbidden_prompt"],
        [["Violence", "custom", "Placeholder forbidden prompt"]],
    )
    (p,) = load_prompts("strongreject", local_dir=root)
    assert (p.instruction, p.category, p.harmful) == (
        "Placeholder forbidden prompt",
        "Violence",
        True,
    )
    assert p.meta["source"] == "custom"


def test_tdc2023_needs_its_full_paths(tmp_path):
    root = tmp_path / "tdc2023"
    write_json(root / "red_teaming/data/dev/behaviors.json", ["Placeholder dev one", "Dev two"])
    write_json(root / "behaviors.json", ["ambiguous: dev or test?"])
    assert [p.instruction for p in load_prompts("tdc2023", "dev", tmp_path)] == [
        "Placeholder dev one",
        "Dev two",
    ]
    with pytest.raises(RefusalScopeError, match=r"in DIR/tdc2023/red_teaming/data/test/"):
        load_prompts(
            "tdc2023",
            "test",
            tmp_path,
        )


def test_alpaca_keeps_rows_without_input(tmp_path):
    write_parquet(
        tmp_path / "alpaca/data/train-00000-of-00001-a09b74b3ef9c3b56.parquet",
        {
            "instruction": ["Name a colour.", "Translate this.", "Count to three. "],
            "input": ["", "Placeholder input", "  "],
            "output": ["Blue.", "Done.", "1 2 3"],
            "text": ["x", "y", "z"],
        },
    )
    prompts = load_prompts("alpaca", local_dir=tmp_path)
    assert [p.instruction for p in prompts] == ["Name a colour.", "Count to three."]
    assert {p.harmful for p in prompts} == {False}
    assert all("output" not in p.meta and "text" not in p.meta for p in prompts)


def test_catqa_json_list_and_json_lines(tmp_path):
    rows = [
        {"Category": "Illegal Activity", "Subcategory": "Drug", "Question": "Placeholder q1?"},
        {"Category": "Malware Viruses", "Subcategory": "Worms", "Question": "Placeholder q2?"},
    ]
    write_json(tmp_path / "catqa/data/catqa_english.json", rows)
    path = tmp_path / "catqa/data/catqa_chinese.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    en = load_prompts("catqa", "en", tmp_path)
    zh = load_prompts("catqa", "zh", tmp_path)
    assert [(p.instruction, p.category, p.meta["Subcategory"]) for p in en] == [
        ("Placeholder q1?", "Illegal Activity", "Drug"),
        ("Placeholder q2?", "Malware Viruses", "Worms"),
    ]
    assert [p.instruction for p in zh] == [p.instruction for p in en]


def test_wildjailbreak_pairs_adversarial_with_vanilla(tmp_path):
    plain = "Placeholder plain request A"
    write_csv(
        tmp_path / "wildjailbreak/train/train.tsv",
        ["vanilla", "adversarial", "completion", "data_type"],
        [
            [plain, "", "Placeholder refusal", "vanilla_harmful"],
            [plain, "Placeholder story wrapping request A", "Refusal", "adversarial_harmful"],
            ["Placeholder benign request", "", "Placeholder answer", "vanilla_benign"],
            ["Placeholder benign request", "Benign story", "Answer", "adversarial_benign"],
            ["Placeholder plain request B", "Role-play B", "Refusal", "adversarial_harmful"],
        ],
        delimiter="\t",
    )  # fmt: skip
    v, a, b = load_prompts("wildjailbreak", "train", tmp_path)
    assert [v.instruction, a.instruction] == [plain, "Placeholder story wrapping request A"]
    assert v.meta["pair_id"] == a.meta["pair_id"] == pair_id(plain) != b.meta["pair_id"]
    assert a.meta["vanilla"] == plain and a.meta["data_type"] == "adversarial_harmful"
    assert "vanilla" not in v.meta and "adversarial" not in v.meta
    assert all("completion" not in p.meta and p.harmful for p in (v, a, b))
    write_csv(
        tmp_path / "wildjailbreak/eval/eval.tsv",
        ["adversarial", "label", "data_type"],
        [["Placeholder eval attack", "1", "adversarial_harmful"],
         ["Placeholder eval benign", "0", "adversarial_benign"]],
        delimiter="\t",
    )  # fmt: skip
    (e,) = load_prompts("wildjailbreak", "eval", tmp_path)
    assert (e.instruction, e.meta["label"]) == ("Placeholder eval attack", "1")
    assert "pair_id" not in e.meta


def test_wikitext_is_text(tmp_path, monkeypatch):
    write_parquet(
        tmp_path / "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet",
        {"text": ["", " = Placeholder Title = \n", " Placeholder sentence one . \n", "  \n"]},
    )
    assert load_texts("wikitext", local_dir=tmp_path) == [
        "= Placeholder Title =",
        "Placeholder sentence one .",
    ]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = describe("wikitext", tmp_path)
    assert d["kind"] == "text" and d["splits"]["test"]["n"] == 2
    assert "wikitext-2-raw-v1/train-00000-of-00001.parquet" in d["splits"]["train"]["error"]
    with pytest.raises(RefusalScopeError, match="holds text; read it with load_texts"):
        load_prompts("wikitext", local_dir=tmp_path)
    with pytest.raises(RefusalScopeError, match="holds prompts; read it with load_prompts"):
        load_texts("advbench", local_dir=tmp_path)


def test_wrong_file_errors_name_the_columns(tmp_path):
    write_csv(tmp_path / "harmbench/harmbench_behaviors_text_val.csv", ["Behavior"], [["x"]])
    with pytest.raises(RefusalScopeError, match="no column 'FunctionalCategory'"):
        load_prompts("harmbench", "val", tmp_path)
    write_csv(tmp_path / "advbench/harmful_behaviors.csv", ["prompt", "target"], [["x", "y"]])
    with pytest.raises(RefusalScopeError, match="none of the columns goal"):
        load_prompts("advbench", local_dir=tmp_path)
    write_csv(
        tmp_path / "strongreject/strongreject_dataset.csv",
        ["category", "forbidden_prompt"],
        [["a", " "]],
    )
    with pytest.raises(RefusalScopeError, match="empty instruction"):
        load_prompts("strongreject", local_dir=tmp_path)
