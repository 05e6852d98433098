"""A user's own data (issue 18 item 1): a CSV or Parquet table with a client column and an image
folder with client folders run through `privbench suite`; each malformed file is refused in one
line naming the file, row and column before any cell starts; files are read once per state, in
chunks; and a cell's content hash follows the data's content."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image
from user_tables import write_table

from privbench.cli.main import main
from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.data.user_data import _cached_records, read_records
from privbench.errors import SpecError
from privbench.spec.schema import DataSpec
from privbench.spec.suite import load_suite


def write_images(root: Path, clients: int = 4, per_class: int = 12, seed: int = 0) -> Path:
    """8x8 grey images of two classes (a bright row or a bright column, with noise) in
    root/<client>/<class>/ (seeded)."""
    rng = np.random.default_rng(seed)
    for c in range(clients):
        for cls in ("columns", "rows"):
            folder = root / f"clinic{c}" / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = rng.uniform(0, 60, (8, 8))
                k = rng.integers(0, 8)
                if cls == "rows":
                    img[k, :] = 255
                else:
                    img[:, k] = 255
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def table_suite(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "mine"\nseed = 1\n[data]\nname = "table"\npath = "{data.name}"\n'
                    f'label = "outcome"\nclient = "site"\nclients = 6\n{extra}'
                    "[model]\nhidden = [16]\n[train]\nrounds = 8\ncohort = 3\nlocal_epochs = 2\n"
                    "lr = 0.3\n[privacy]\nepsilon = inf\n")
    return path


def image_suite(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "i.toml"
    path.write_text(f'name = "scans"\nseed = 1\n[data]\nname = "images"\npath = "{root.name}"\n'
                    "clients = 4\n[model]\nname = \"cnn\"\nchannels = [4, 8]\n"
                    "[train]\nrounds = 8\ncohort = 2\nlocal_epochs = 2\nlr = 0.3\n"
                    "[privacy]\nepsilon = inf\n")
    return path


def _run(suite: Path, out: Path, capsys) -> dict:
    """`privbench suite SUITE --out OUT`, in this process (a one-cell suite runs inline)."""
    code = main(["suite", str(suite), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    assert cell["status"] == "ok", cell["error"]
    return cell


def _accuracy(cell: dict) -> float:
    return next(m["value"] for m in cell["metrics"]
                if m["scorer"] == "utility" and m["metric"] == "accuracy")


def test_a_csv_with_a_client_column_runs_through_privbench_suite(tmp_path, capsys):
    suite = table_suite(tmp_path, write_table(tmp_path / "visits.csv"))
    cell = _run(suite, tmp_path / "run", capsys)
    assert cell["claim"]["sampling_rate"] == pytest.approx(3 / 6)  # the column's 6 clients
    assert _accuracy(cell) > 0.7, cell["metrics"]  # chance is about 1/3


def test_an_image_folder_with_client_folders_runs_through_privbench_suite(tmp_path, capsys):
    suite = image_suite(tmp_path, write_images(tmp_path / "scans"))
    cell = _run(suite, tmp_path / "run", capsys)
    assert cell["claim"]["sampling_rate"] == pytest.approx(2 / 4)  # the 4 client folders
    assert _accuracy(cell) > 0.8, cell["metrics"]  # chance 1/2


def test_named_clients_keep_their_records_and_parquet_reads_as_csv(tmp_path):
    csv = write_table(tmp_path / "t.csv")
    spec = DataSpec(name="table", path=str(csv), label="outcome", client="site", clients=6)
    split = load_split(spec, seed=0)
    shards = partition(spec, split.y_train, 0, clients=split.train_clients)
    assert [len(s.indices) for s in shards] == [15] * 6  # 30 a site, half held out
    for i, shard in enumerate(shards):  # a client's shard is exactly its own records
        assert (split.train_clients[shard.indices] == i).all()
    pq = write_table(tmp_path / "t.parquet")
    other = load_split(spec.model_copy(update={"path": str(pq)}), seed=0)
    assert other.fingerprint() == split.fingerprint()
    assert load_split(spec, seed=1).fingerprint() != split.fingerprint()
    assert read_records(spec).label_names == ("high", "low", "mid")
    drawn = spec.model_copy(update={"client": None, "clients": 4,  # no client column
                                    "features": [f"f{i}" for i in range(5)]})
    split = load_split(drawn, seed=0)
    assert split.train_clients is None and len(split.y_train) == 90  # stratified by class
    assert len(partition(drawn, split.y_train, 0, clients=split.train_clients)) == 4


def test_an_image_folder_without_client_folders_is_partitioned_as_usual(tmp_path):
    root = write_images(tmp_path / "scans", clients=1, per_class=10)
    for cls in ("rows", "columns"):
        (root / "clinic0" / cls).rename(root / cls)
    (root / "clinic0").rmdir()
    records = read_records(DataSpec(name="images", path=str(root), clients=2))
    assert records.clients is None and records.label_names == ("columns", "rows")
    assert records.x.shape == (20, 64) and records.image_shape == (8, 8)
    assert records.x.min() >= 0.0 and records.x.max() == 1.0  # grey levels / 255


def test_a_large_table_is_read_in_chunks_with_the_same_records(tmp_path, monkeypatch):
    import privbench.data.tabular_files as tabular

    csv = write_table(tmp_path / "t.csv")
    spec = DataSpec(name="table", path=str(csv), label="outcome", client="site", clients=6)
    whole = read_records(spec)
    frame = pd.read_csv(csv).astype({"f3": object})
    frame.loc[150, "f3"] = "n/a"  # line 152 of the file, in the 22nd chunk of 7 rows
    frame.to_csv(csv, index=False)
    monkeypatch.setattr(tabular, "CHUNK_ROWS", 7)
    with pytest.raises(Exception, match=r"t.csv line 152, column 'f3': 'n/a' is not a finite"):
        read_records(spec)
    write_table(csv)
    chunked = read_records(spec)
    assert np.array_equal(chunked.x, whole.x) and np.array_equal(chunked.y, whole.y)
    assert np.array_equal(chunked.clients, whole.clients)


def _missing_label(tmp_path: Path) -> Path:
    path = write_table(tmp_path / "t.csv")
    frame = pd.read_csv(path).rename(columns={"outcome": "result"})
    frame.to_csv(path, index=False)
    return path


def _wrong_type(tmp_path: Path) -> Path:
    path = write_table(tmp_path / "t.csv")
    frame = pd.read_csv(path).astype({"f2": object})
    frame.loc[4, "f2"] = "twelve"
    frame.to_csv(path, index=False)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    path.write_text("")
    return path


def _header_only(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    path.write_text("site,f0,outcome\n")
    return path


def _empty_label(tmp_path: Path) -> Path:
    path = write_table(tmp_path / "t.csv")
    frame = pd.read_csv(path)
    frame.loc[9, "outcome"] = None
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("break_it, message", [
    (_missing_label, "data.label = 'outcome': t.csv has no column 'outcome'; its columns are "
                     "'site', 'f0'"),
    (_wrong_type, "data.path: t.csv line 6, column 'f2': 'twelve' is not a finite number; make "
                  "every feature column numeric"),
    (_empty, "data.path: t.csv is empty; write a header row"),
    (_header_only, "data.path: t.csv has a header but no rows"),
    (_empty_label, "data.path: t.csv line 11, column 'outcome': empty"),
])
def test_a_malformed_table_is_one_line_before_any_cell(tmp_path, break_it, message):
    path = break_it(tmp_path)
    with pytest.raises(SpecError) as err:
        load_suite(str(table_suite(tmp_path, path)))
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]
    assert message in err.value.problems[0], err.value.problems


def test_an_unreadable_image_fails_once_in_one_line_before_any_cell(tmp_path):
    root = write_images(tmp_path / "scans", clients=2, per_class=3)
    (root / "clinic1" / "rows" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    proc = run_cli("suite", str(image_suite(tmp_path, root)), "--out", str(out),
                   "--set", "data.clients=2", "--set", "train.cohort=1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "data.path: clinic1/rows/2.png: not a readable image" in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())  # no cell started


@pytest.mark.parametrize("change, message", [
    (lambda r: (r / "clinic0" / "rows" / "0.png").write_bytes(b""), "not a readable image"),
    (lambda r: Image.new("L", (8, 6)).save(r / "clinic0" / "rows" / "0.png"),
     "clinic0/rows/0.png is 8x6 pixels, not square; set data.image_size"),
    (lambda r: Image.new("L", (4, 4)).save(r / "clinic0" / "rows" / "0.png"),
     "is 4x4 pixels, the first image 8x8; set data.image_size = 8"),
    (lambda r: (r / "clinic0" / "rows").rename(r / "rows"),
     "rows/ holds images but clinic0/ holds folders"),
])
def test_a_malformed_image_folder_is_one_line(tmp_path, change, message):
    root = write_images(tmp_path / "scans", clients=2, per_class=3)
    change(root)
    with pytest.raises(SpecError) as err:
        load_suite(str(image_suite(tmp_path, root)), ["data.clients=2", "train.cohort=1"])
    assert len(err.value.problems) == 1 and message in err.value.problems[0], err.value.problems


class _NoPyarrow:
    """An import hook under which pyarrow is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")


def test_parquet_without_pyarrow_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.parquet")
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoPyarrow(), *sys.meta_path])
    _cached_records.cache_clear()
    with pytest.raises(SpecError) as err:
        load_suite(str(table_suite(tmp_path, path)))
    assert err.value.problems == ["data.path: t.parquet: reading Parquet needs pyarrow; pip "
                                  "install 'privbench[data]' (or pyarrow), or save the table "
                                  "as CSV"]
    _cached_records.cache_clear()


def test_the_spec_names_the_clients_the_file_holds(tmp_path):
    suite = table_suite(tmp_path, write_table(tmp_path / "t.csv"))
    with pytest.raises(SpecError) as err:
        load_suite(str(suite), ["data.clients=50", "train.cohort=3"])
    assert err.value.problems == ["data.clients = 50: t.csv names 6 clients (column 'site'); "
                                  "set data.clients = 6"]
    with pytest.raises(SpecError, match=r"data.image_size = 8: only data.name = 'images' reads"):
        load_suite(str(suite), ["data.image_size=8"])


def test_the_file_is_read_once_for_all_cells_and_again_when_edited(tmp_path):
    csv = write_table(tmp_path / "t.csv")
    suite = table_suite(tmp_path, csv).read_text() + '[sweep]\n"train.lr" = [0.1, 0.2, 0.3]\n'
    (tmp_path / "s.toml").write_text(suite)
    _cached_records.cache_clear()
    first = load_suite(str(tmp_path / "s.toml"))
    assert _cached_records.cache_info().misses == 1 and len(first.cells) == 3
    write_table(csv, seed=0)  # the same bytes, written again: a new mtime, the same content
    again = load_suite(str(tmp_path / "s.toml"))
    assert [c.key for c in again.cells] == [c.key for c in first.cells]
    assert _cached_records.cache_info().misses == 2  # the new file state was read once
    write_table(csv, seed=1)  # other records: every cell gets a new key (no cached result)
    edited = load_suite(str(tmp_path / "s.toml"))
    assert not {c.key for c in edited.cells} & {c.key for c in first.cells}


def test_image_and_jsonl_folders_enter_the_content_hash(tmp_path):
    root = write_images(tmp_path / "scans", clients=2, per_class=3)
    overrides = ["data.clients=2", "train.cohort=1"]
    key = load_suite(str(image_suite(tmp_path, root)), overrides).cells[0].key
    Image.new("L", (8, 8), 255).save(root / "clinic1" / "rows" / "extra.png")
    assert load_suite(str(image_suite(tmp_path, root)), overrides).cells[0].key != key
    texts = tmp_path / "texts"
    texts.mkdir()
    for c in range(2):
        (texts / f"c{c}.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    suite = tmp_path / "t.toml"
    suite.write_text(f'task = "causal_lm"\n[data]\nname = "jsonl"\npath = "{texts}"\n'
                     'clients = 2\n[model]\nname = "tiny_gpt2"\n[train]\ncohort = 2\n'
                     "[lm.canaries]\ndigits = 2\n")
    before = load_suite(str(suite)).cells[0].key
    (texts / "c1.jsonl").write_text('{"text": "a"}\n{"text": "c"}\n')
    assert load_suite(str(suite)).cells[0].key != before


def test_the_gates_and_limits_count_a_users_table(tmp_path):
    """delta <= 1/n counts the table's training records (example level) or its named clients;
    the memory estimate builds the model for the table's 5 features and 3 labels."""
    from privbench.gates.precheck import privacy_units
    from privbench.spec.limits import parameter_counts, parameter_names

    suite = table_suite(tmp_path, write_table(tmp_path / "t.csv"))
    example = load_suite(str(suite), ["privacy.unit=example", "privacy.epsilon=4.0"]).cells[0]
    assert privacy_units(example.spec) == 90  # 15 of each site's 30 records train
    client = load_suite(str(suite), ["privacy.epsilon=4.0"]).cells[0]
    assert privacy_units(client.spec) == 6
    assert parameter_counts(client.spec) == (5 * 16 + 16 + 16 * 3 + 3,) * 2
    assert parameter_names(client.spec) == ["0.weight", "0.bias", "2.weight", "2.bias"]
