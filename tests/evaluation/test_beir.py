import pytest

from citewell.core.errors import EvaluationError
from citewell.evaluation.beir import dataset_name, load_beir, load_qrels
from tests.evaluation.beir_files import write_beir

DOCS = [
    {"_id": "d1", "title": "Alpha", "text": "first"},
    {"_id": "d2", "title": "", "text": "second"},
    {"_id": 3, "text": "third, numeric id, no title"},
]
QUERIES = [
    {"_id": "q1", "text": "alpha?"},
    {"_id": "q2", "text": "unjudged"},
    {"_id": "q3", "text": "second?"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq3\td2\t1\n"


@pytest.mark.parametrize("gz", [False, True])
def test_loads_plain_and_gzipped_corpus(tmp_path, gz):
    dataset = load_beir(write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS, gz=gz), "test")
    assert [d.doc_id for d in dataset.corpus] == ["d1", "d2", "3"]
    assert dataset.corpus[2].title == ""
    assert [q.query_id for q in dataset.queries] == ["q1", "q3"]  # only judged, file order
    assert dataset.qrels["q1"] == {"d1": 2, "d2": 0}
    assert dataset.name == "mini"


def test_corpus_hash_changes_with_text(tmp_path):
    first = load_beir(write_beir(tmp_path / "a", DOCS, QUERIES, QRELS), "test")
    same = load_beir(write_beir(tmp_path / "b", DOCS, QUERIES, QRELS, gz=True), "test")
    changed_docs = [*DOCS[:2], {"_id": 3, "text": "changed"}]
    changed = load_beir(write_beir(tmp_path / "c", changed_docs, QUERIES, QRELS), "test")
    assert first.corpus_sha256 == same.corpus_sha256
    assert first.corpus_sha256 != changed.corpus_sha256


def test_generic_folder_name_uses_parent(tmp_path):
    assert dataset_name(tmp_path / "cranfield" / "beir") == "cranfield"
    assert dataset_name(tmp_path / "scifact") == "scifact"


@pytest.mark.parametrize(
    ("damaged", "content", "message"),
    [
        (
            "corpus.jsonl",
            '{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n',
            "duplicate document id",
        ),
        ("corpus.jsonl", '{"_id": "d1", "text": "x"}\n{not json\n', ":2: invalid JSON"),
        ("corpus.jsonl", '{"text": "no id"}\n', "field '_id'"),
        ("corpus.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("corpus.jsonl", "\n", "corpus is empty"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\n", ":2: expected"),
        ("qrels/test.tsv", "q1\td1\thigh\n", "not an integer"),
        # nDCG's gain 2^grade - 1: 5000 raised OverflowError, three 1023s made the metric NaN.
        ("qrels/test.tsv", "q1\td1\t5000\n", "score 5000 is outside"),
        ("qrels/test.tsv", "q1\td1\t1023\nq1\td2\t1023\n", "score 1023 is outside"),
        ("qrels/test.tsv", "q1\td1\t-5000\n", "score -5000 is outside"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\n", "no judgements"),
        ("qrels/test.tsv", "qX\td1\t1\n", "not in queries.jsonl"),
    ],
)
def test_malformed_file_raises_naming_the_problem(tmp_path, damaged, content, message):
    root = write_beir(tmp_path / "bad", DOCS, QUERIES, QRELS)
    (root / damaged).write_text(content, encoding="utf-8")
    with pytest.raises(EvaluationError, match=message):
        load_beir(root, "test")


def test_trec_style_qrels_rows_are_accepted(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("q1 0 d1 2\nq1 0 d2 0\n", encoding="utf-8")
    assert load_qrels(path) == {"q1": {"d1": 2, "d2": 0}}


def test_missing_files_are_named(tmp_path):
    with pytest.raises(EvaluationError, match="does not exist"):
        load_beir(tmp_path / "nowhere", "test")
    root = write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS)
    with pytest.raises(EvaluationError, match=r"available splits: \['test'\]"):
        load_beir(root, "dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(EvaluationError, match=r"no queries\.jsonl"):
        load_beir(root, "test")


def test_truncated_gzip_raises(tmp_path):
    root = write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS, gz=True)
    data = (root / "corpus.jsonl.gz").read_bytes()
    (root / "corpus.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EvaluationError, match="cannot read"):
        load_beir(root, "test")


def test_blank_judged_query_raises(tmp_path):
    root = write_beir(tmp_path / "mini", DOCS, [{"_id": "q1", "text": "  "}], "q1\td1\t1\n")
    with pytest.raises(EvaluationError, match="empty text"):
        load_beir(root, "test")


def test_real_scifact_and_cranfield_shapes(shared_data):
    scifact = load_beir(shared_data / "ir" / "scifact", "test")
    assert (len(scifact.corpus), len(scifact.queries)) == (5183, 300)
    assert sum(len(judged) for judged in scifact.qrels.values()) == 339
    cranfield = load_beir(shared_data / "ir" / "cranfield" / "beir", "test")
    assert cranfield.name == "cranfield"
    assert (len(cranfield.corpus), len(cranfield.queries)) == (1400, 225)
    grades = {grade for judged in cranfield.qrels.values() for grade in judged.values()}
    assert grades == {1, 2, 3, 4}
    empty = {doc.doc_id for doc in cranfield.corpus if not doc.text.strip()}
    assert empty == {"471", "995"}
