"""Training where the full install is not: the portable training-data file, the torch-only entry
point (``python -m citewell.training.cross_encoder``), distillation, and installing a model
trained elsewhere into an index with its gate (``citewell reranker data|install``)."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from citewell.cli.main import main as cli_main
from citewell.core.errors import EvaluationError
from citewell.core.settings import Settings
from citewell.evaluation.reranker_gate import holdout_judgements
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.reranker_decision import load_gate
from citewell.training.cross_encoder import (
    PortableFitOptions,
    _loss,
    _Student,
    fit_from_file,
    kept_layers,
)
from citewell.training.cross_encoder import main as cross_encoder_main
from citewell.training.data import training_dataset
from citewell.training.examples import (
    Candidate,
    TrainingData,
    TrainingGroup,
    ValidationQuery,
    load_training_data,
    save_training_data,
)
from citewell.training.reranker import export_training_data

SHARED = "Vitamin D supplementation increased bone mineral density in older adults."


def _data() -> TrainingData:
    groups = (
        TrainingGroup(
            query="vitamin d and bone density",
            positive=SHARED,
            negatives=("Cats sleep for most of the day.", "The stock market fell sharply."),
            source="judged",
        ),
        TrainingGroup(
            query="does vitamin d help older adults",
            positive=SHARED,
            negatives=("Cats sleep for most of the day.",),
            source="pseudo-inner",
        ),
    )
    validation = (
        ValidationQuery(
            query_id="q1",
            text="vitamin d bones",
            qrels={"d1": 1},
            candidates=(Candidate(doc_id="d2", text="Cats."), Candidate(doc_id="d1", text=SHARED)),
        ),
    )
    return TrainingData(
        groups=groups,
        validation=validation,
        counts={"judged": 1, "pseudo-inner": 1},
        train_queries=1,
        validation_queries=1,
    )


def test_training_data_file_round_trips_and_stores_each_passage_once(tmp_path: Path) -> None:
    data = _data()
    path = save_training_data(data, tmp_path / "data.json.xz")
    assert load_training_data(path) == data
    raw = lzma.decompress(path.read_bytes()).decode("utf-8")
    assert raw.count(SHARED) == 1 and raw.count("Cats sleep for most of the day.") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data.json.xz"]  # no staging file left


def test_damaged_or_foreign_training_data_files_are_clear_errors(tmp_path: Path) -> None:
    good = save_training_data(_data(), tmp_path / "good.json.xz")
    record = json.loads(lzma.decompress(good.read_bytes()))

    def write(name: str, value: object) -> Path:
        path = tmp_path / name
        path.write_bytes(lzma.compress(json.dumps(value).encode("utf-8")))
        return path

    truncated = tmp_path / "truncated.json.xz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {
        truncated: "cannot read training data",
        tmp_path / "missing.json.xz": "cannot read training data",
        write("foreign.json.xz", {"format": "something-else"}): "not a Citewell training-data",
        write("future.json.xz", record | {"version": 99}): "version 99",
        write(
            "dangling.json.xz",
            record | {"groups": [record["groups"][0] | {"positive": 10_000}]},
        ): "damaged training-data file",
    }
    for path, message in cases.items():
        with pytest.raises(EvaluationError, match=message):
            load_training_data(path)


def test_the_training_entry_point_needs_only_torch_side_packages() -> None:
    """A GPU image has torch, transformers, sentence-transformers (and pydantic carried in);
    none of the serving stack may be imported on the way to training."""
    probe = (
        "import json, sys, citewell.training.cross_encoder, citewell.training.examples;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout))
    heavy = {
        "qdrant_edge",
        "qdrant_client",
        "llama_index",
        "unstructured",
        "fastapi",
        "rank_bm25",
        "openvino",
        "pydantic_settings",
        "citewell.retrieval.service",
        "citewell.ingestion",
        "citewell.evaluation.retrieval_eval",
    }
    assert not {name for name in loaded if name.split(".")[0] in heavy or name in heavy}


def test_a_query_longer_than_the_pair_length_is_cut_not_an_error() -> None:
    student = _Student(1, 16, "cpu")
    scores = student.score("bone density " * 40, ["Vitamin D and bone.", "Cats sleep."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_distilling_from_an_identical_teacher_adds_nothing_but_its_weight() -> None:
    torch.manual_seed(0)
    student = _Student(1, 48, "cpu")
    teacher = _Student(1, 48, "cpu")
    teacher.model.load_state_dict(student.model.state_dict())
    student.model.eval()  # no dropout: the two score alike
    groups = list(_data().groups)
    hard = _loss(student, groups, "listwise", 3)
    mixed = _loss(student, groups, "listwise", 3, teacher, 0.25)
    assert float(mixed) == pytest.approx(0.75 * float(hard), abs=1e-5)
    # A teacher that tells the passages apart (all six layers, a sharpened head): now it
    # disagrees with the student's near-uniform scores.
    other = _Student(None, 48, "cpu")
    with torch.no_grad():
        other.model.classifier.weight.mul_(1000.0)
    assert float(_loss(student, groups, "listwise", 3, other, 1.0)) > 1e-3


@pytest.mark.slow
def test_data_fit_and_install_make_a_gated_reranker_for_the_index(
    tiny: tuple[Settings, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, index, dataset = tiny
    path = tmp_path / "data.json.xz"
    # The documented commands: citewell reranker data, python -m …cross_encoder, … install.
    data_dir = ["--data-dir", str(settings.data_dir)]
    mine = ["reranker", "data", "--dataset", str(dataset), "--out", str(path)]
    assert cli_main([*mine, "--negatives", "3", "--max-pseudo", "12", *data_dir]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    data = load_training_data(path)
    assert data.counts["judged"] > 0 and data.validation_queries > 0
    assert sum(n for source, n in data.counts.items() if source.startswith("pseudo")) > 0

    model = tmp_path / "ce-test"
    fit = ["--data", str(path), "--out", str(model), "--layers", "1", "--epochs", "1"]
    fit += ["--batch-size", "4", "--negatives", "3", "--max-length", "64", "--device", "cpu"]
    assert cross_encoder_main(fit) == 0
    assert "validation nDCG@10" in capsys.readouterr().out
    card = json.loads((model / "card.json").read_text(encoding="utf-8"))
    assert (model / "config.json").is_file() and card["parameters"]["device"] == "cpu"
    assert card["history"]

    args = ["reranker", "install", str(model), "--dataset", str(dataset)]
    code = cli_main([*args, "--data-dir", str(settings.data_dir)])
    assert code == 0
    assert "installed" in capsys.readouterr().out
    rerankers = IndexLayout(settings, index).rerankers_dir
    assert (rerankers / "current").resolve() == (rerankers / "ce-test").resolve()
    decision = load_gate(rerankers)
    assert decision is not None and "gate half" in decision.judgements
    # The gate never decides on the queries training picked its checkpoint on.
    gate_queries, _ = holdout_judgements(dataset, part="gate")
    assert gate_queries and {v.query_id for v in data.validation}.isdisjoint(
        q.query_id for q in gate_queries
    )
    installed = json.loads((rerankers / "ce-test" / "card.json").read_text(encoding="utf-8"))
    assert installed["gate"]["model"] == decision.model

    # A damaged model is refused before serving is pointed at it, and nothing of it stays; a
    # second folder of the served name is refused rather than replaced under serving.
    broken = tmp_path / "ce-broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    for folder, message in ((broken, "cannot load reranker"), (model, "already has a reranker")):
        capsys.readouterr()
        install = ["reranker", "install", str(folder), "--dataset", str(dataset)]
        code = cli_main([*install, "--data-dir", str(settings.data_dir)])
        assert code != 0 and message in capsys.readouterr().err
        assert (rerankers / "current").resolve() == (rerankers / "ce-test").resolve()
    assert not (rerankers / "ce-broken").exists()


@pytest.mark.slow
def test_a_corpus_without_train_judgements_gives_pseudo_queries_only(
    tiny: tuple[Settings, str, Path], tmp_path: Path
) -> None:
    settings, _, dataset = tiny
    corpus_only = tmp_path / "corpus-only" / dataset.name
    shutil.copytree(dataset, corpus_only, ignore=shutil.ignore_patterns("qrels"))
    assert training_dataset(corpus_only).split == "corpus"
    data = export_training_data(settings, [corpus_only], tmp_path / "d.json.xz", max_pseudo=6)
    assert data.groups and set(data.counts) <= {"pseudo-title", "pseudo-sentence", "pseudo-inner"}
    assert data.validation == () and data.train_queries == 0


def test_a_cut_student_keeps_layers_whose_first_token_tells_inputs_apart() -> None:
    """The classification head reads the first token; cut to the bottom two layers of the
    bi-encoder that state was the same for every pair (spread 0.0009) and students stayed at
    chance. Kept layers are spread out and include the last."""
    assert kept_layers(6, 2) == [0, 5] and kept_layers(6, 1) == [5]
    assert kept_layers(6, 3) == [0, 2, 5] and kept_layers(6, 6) == list(range(6))
    student = _Student(2, 48, "cpu")
    queries = ["vitamin d bone"] * 3 + ["stock market crash"] * 3
    passages = ["Vitamin D and bone density.", "Cats sleep a lot.", "The economy grew."] * 2
    with torch.no_grad():
        first = student.model.bert(**student.features(queries, passages)).last_hidden_state[:, 0]
    assert float(first.std(0).mean()) > 0.05


def test_without_validation_queries_the_whole_schedule_is_trained(tmp_path: Path) -> None:
    """A set mined from corpora without judgements has no validation: early stopping on a
    constant score stopped after the first evaluation and returned those weights."""
    data = _data().model_copy(update={"validation": (), "validation_queries": 0})
    path = save_training_data(data, tmp_path / "data.json.xz")
    options = PortableFitOptions(
        layers=1, epochs=3, batch_size=1, negatives=2, max_length=32, device="cpu", patience=0
    )
    card = fit_from_file(path, tmp_path / "model", options)
    assert card.steps == 6 and card.history == ()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "batch_size"),
        (["--epochs", "0"], "epochs"),
        (["--distill-weight", "2"], "distill_weight"),
        (["--layers", "0"], "layers"),
        (["--teacher", "no-such-folder"], "not a model folder"),
    ],
)
def test_the_training_entry_point_refuses_bad_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    path = save_training_data(_data(), tmp_path / "data.json.xz")
    code = cross_encoder_main(["--data", str(path), "--out", str(tmp_path / "m"), *flags])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err and not (tmp_path / "m").exists()
