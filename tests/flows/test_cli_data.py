"""``gnnrec data validate`` and ``gnnrec data stats`` on small files in upstream formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()

NUM_USERS, NUM_ITEMS = 8, 12


def ratings_lines(seed: int = 0) -> list[str]:
    """MovieLens u.data lines: every user rates seven distinct items."""
    rng = np.random.default_rng(seed)
    lines = []
    t = 881_250_949
    for user in range(1, NUM_USERS + 1):
        for item in rng.choice(np.arange(1, NUM_ITEMS + 1), size=7, replace=False):
            t += 97
            lines.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t{t}")
    return lines


def write_movielens(folder: Path, lines: list[str] | None = None, *, raw: str | None = None) -> Path:
    """A tiny ml-100k folder: u.data (given lines or raw text), u.item, u.user."""
    folder.mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else "\n".join(lines if lines is not None else ratings_lines()) + "\n"
    (folder / "u.data").write_text(text)
    flags = ["0"] * 19
    items = []
    for item in range(1, NUM_ITEMS + 1):
        f = list(flags)
        f[1 + item % 5] = "1"
        items.append(f"{item}|Film {item} (1995)|01-Jan-1995||http://x/{item}|" + "|".join(f))
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    users = [f"{u}|{20 + u}|{'MF'[u % 2]}|student|0000{u}" for u in range(1, NUM_USERS + 1)]
    (folder / "u.user").write_text("\n".join(users) + "\n")
    return folder


def write_lastfm(folder: Path, friends: list[tuple[int, int]]) -> Path:
    """A tiny hetrec2011-lastfm-2k folder with the four files the loader requires."""
    folder.mkdir(parents=True, exist_ok=True)
    plays = ["userID\tartistID\tweight"]
    for line in ratings_lines():
        user, item, _, _ = line.split("\t")
        plays.append(f"{user}\t{item}\t{int(item) * 13}")
    (folder / "user_artists.dat").write_text("\n".join(plays) + "\n")
    rows = ["userID\tfriendID"] + [f"{a}\t{b}" for a, b in friends]
    (folder / "user_friends.dat").write_text("\n".join(rows) + "\n")
    (folder / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n1\t2\t1\t1\t1\t2008\n2\t3\t2\t1\t1\t2009\n"
    )
    (folder / "tags.dat").write_text("tagID\ttagValue\n1\trock\n2\tjazz\n")
    return folder


def invoke(*args: str):
    result = runner.invoke(app, ["data", *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def ml_args(folder: Path) -> list[str]:
    return ["--dataset", "movielens-100k", "--data-dir", str(folder), "--no-download"]


def test_validate_passes_on_good_files(tmp_path: Path) -> None:
    result = invoke("validate", *ml_args(write_movielens(tmp_path / "ml")))
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output


def test_validate_fails_with_a_readable_summary_and_data_docs(tmp_path: Path) -> None:
    lines = ratings_lines()
    user, item, _, t = lines[3].split("\t")
    lines[3] = f"{user}\t{item}\t99\t{t}"
    lines.append(lines[10])  # a duplicated row
    folder = write_movielens(tmp_path / "ml", lines)
    docs = tmp_path / "docs"
    result = invoke("validate", *ml_args(folder), "--docs-dir", str(docs))
    assert result.exit_code == 1
    out = result.output
    assert "FAILED" in out
    for text in ("interactions", "rating", "expect_column_values_to_be_between", "99"):
        assert text in out
    assert "expect_compound_columns_to_be_unique" in out
    assert str(folder / "u.data") in out
    assert str((docs / "index.html").resolve()) in out
    assert (docs / "index.html").is_file()


def test_validate_json_on_failure(tmp_path: Path) -> None:
    lines = ratings_lines()
    lines[0] = "\t".join(["", *lines[0].split("\t")[1:]])  # an empty user id -> NaN
    folder = write_movielens(tmp_path / "ml", lines)
    result = invoke("validate", *ml_args(folder), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)["contract"]
    assert data["success"] is False
    bad = [r for r in data["results"] if not r["success"]]
    assert [(r["table"], r["columns"], r["unexpected_count"]) for r in bad] == [("interactions", ["user"], 1)]


def test_truncated_last_line_fails_the_contract(tmp_path: Path) -> None:
    text = "\n".join(ratings_lines()) + "\n8\t3"  # the copy stopped mid-line
    result = invoke("validate", *ml_args(write_movielens(tmp_path / "ml", raw=text)))
    assert result.exit_code == 1
    assert "every row has a rating" in result.output
    assert "every row has a timestamp" in result.output


def test_malformed_file_is_one_paragraph_and_exit_2(tmp_path: Path) -> None:
    lines = ratings_lines()
    lines[5] = "3\tabc\t4\t881250949"
    folder = write_movielens(tmp_path / "ml", lines)
    result = invoke("validate", *ml_args(folder))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error:")
    assert "u.data" in result.stderr and "abc" in result.stderr


def test_missing_files_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("validate", *ml_args(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "u.data" in result.stderr


def test_self_friendship_fails_on_lastfm(tmp_path: Path) -> None:
    folder = write_lastfm(tmp_path / "lastfm", [(1, 2), (2, 1), (3, 3)])
    result = invoke("validate", "--dataset", "lastfm-hetrec", "--data-dir", str(folder), "--no-download")
    assert result.exit_code == 1
    assert "social" in result.output
    assert "expect_select_column_values_to_be_unique_within_record" in result.output
    assert "'friend': 3" in result.output
    assert str(folder / "user_friends.dat") in result.output


def test_stats_json(tmp_path: Path) -> None:
    folder = write_lastfm(tmp_path / "lastfm", [(1, 2), (2, 1), (3, 4)])
    result = invoke(
        "stats",
        "--dataset",
        "lastfm-hetrec",
        "--data-dir",
        str(folder),
        "--no-download",
        "--json",
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["users"], data["items"], data["interactions"]) == (
        NUM_USERS,
        len(set(line.split("\t")[1] for line in ratings_lines())),
        NUM_USERS * 7,
    )
    assert data["social_edges"] == 2  # (1, 2) stored both ways counts once
    assert data["kg_triples"] == 2 and data["kg_relations"] == 1
    assert data["split"]["method"] == "random" and data["split"]["seed"] == 3
    assert data["split"]["train"] + data["split"]["valid"] + data["split"]["test"] == NUM_USERS * 7
    assert data["graphs"]["user_item"]["edges"] == data["split"]["train"]
    assert data["contract"]["success"] is True


def test_stats_table_and_failures(tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "ml")
    result = invoke("stats", *ml_args(folder), "--split", "loo")
    assert result.exit_code == 0, result.output
    assert "interactions" in result.stdout and "user_item" in result.stdout

    bad = invoke("stats", *ml_args(folder), "--ratios", "0.5", "0.1", "0.1")
    assert bad.exit_code == 2
    assert "Invalid option" in bad.stderr and "sum to 1" in bad.stderr

    lines = ratings_lines()
    lines.append(lines[0])
    broken = invoke("stats", *ml_args(write_movielens(tmp_path / "dup", lines)))
    assert broken.exit_code == 1
    assert "expect_compound_columns_to_be_unique" in broken.output
    allowed = invoke("stats", *ml_args(tmp_path / "dup"), "--aggregate-duplicates", "--json")
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["interactions"] == NUM_USERS * 7


@pytest.mark.parametrize("name", ["validate", "stats"])
def test_every_option_has_help(name: str) -> None:
    command = get_command(app).commands["data"].commands[name]  # type: ignore[attr-defined]
    assert command.help
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    assert len(options) >= 6
    for param in options:
        assert param.help and len(param.help) > 20, param.name


@pytest.mark.parametrize(
    ("value", "scale", "code"),
    [
        ("1e300", ("--rating-scale", "1", "5"), 1),  # out of the declared scale
        ("inf", ("--rating-scale", "1", "5"), 1),
        ("inf", (), 1),  # no scale: a non-finite rating still breaks the contract
        ("1e300", (), 0),  # no scale: any finite positive weight (listen counts) passes
        ("4", ("--rating-scale", "1", "5"), 0),
    ],
)
def test_rating_scale_lets_the_contract_reject_out_of_range_ratings(
    tmp_path: Path, value: str, scale: tuple[str, ...], code: int
) -> None:
    rows = [f"{u},{(u * 3 + k) % 30 + 1},3" for u in range(1, 21) for k in range(10)]
    rows[7] = rows[7].rsplit(",", 1)[0] + f",{value}"
    (tmp_path / "interactions.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    result = invoke("validate", "--dataset", "csv", "--data-dir", str(tmp_path), *scale)
    assert result.exit_code == code, result.output
    if code:
        assert "rating" in result.stdout and "expect_column_values_to_be_between" in result.stdout


def test_a_rating_scale_out_of_order_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("validate", "--dataset", "csv", "--data-dir", str(tmp_path), "--rating-scale", "5", "1")
    assert result.exit_code == 2 and "rating scale" in result.stderr and "Traceback" not in result.output
