"""`pathfm ablate list | show | run --dry-run` as a user runs them (real CLI entry point)."""

from __future__ import annotations

import pytest

from pathfm.cli import main


def test_list_shows_every_named_study_with_a_description(capsys):
    assert main(["ablate", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("component", "kde", "hsv", "hed", "data", "highres", "interactions"):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "v1" in line and len(line.split("v1", 1)[1].strip()) > 20


def test_show_prints_arms_aliases_and_comparisons(capsys):
    assert main(["ablate", "show", "component"]) == 0
    out = capsys.readouterr().out
    assert "8 arms x 2 seeds = 16" in out
    assert "baseline: dinov2" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("+hed "))
    assert "-highres" in row  # the deduplicated name is shown beside the kept one
    assert "-kde vs full" in out


def test_show_yaml_prints_the_study_file_to_copy(capsys):
    assert main(["ablate", "show", "hed", "--yaml"]) == 0
    assert "study: hed" in capsys.readouterr().out


def test_dry_run_prints_trial_count_and_estimated_hours(capsys, tmp_path):
    assert main(["ablate", "run", "component", "--scale", "smoke", "--seeds", "3", "--dry-run",
                 "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "8 arms x 3 seeds = 24" in out
    assert "estimated CPU-h" in out and "validated 24 trial configs" in out
    assert "dry run" in out
    assert not any(tmp_path.iterdir())  # nothing was written


def test_paper_dry_run_estimates_gpu_hours(capsys):
    assert main(["ablate", "run", "hed", "--scale", "paper", "--dry-run", "--set", "data.slides=samples/wsi"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if "estimated GPU-h" in line)
    hours = float(total.split("estimated GPU-h:")[1].split()[0])
    assert 50 < hours < 5000  # 15 ViT-B/14 runs of 166,700 steps
    assert "166700" in out
    memory = next(line for line in out.splitlines() if "estimated memory per GPU" in line)
    gib = float(memory.split("~")[1].split()[0])
    assert 10 < gib < 80  # ViT-B/14 at batch 64, 2 x 224 + 8 x 98 px, bf16 (pathfm/ssl/memory.py)


@pytest.mark.parametrize("argv,msg", [
    (["ablate", "run", "componnet", "--dry-run"], "did you mean component"),
    (["ablate", "run", "hed", "--dry-run", "--set", "hed_strength=0.3"], "varies it across arms"),
    (["ablate", "run", "hed", "--scale", "galactic", "--dry-run"], "unknown scale"),
    (["ablate", "run", "data", "--scale", "paper", "--dry-run"], "--max-slides"),
])
def test_user_errors_exit_2_with_a_message(capsys, argv, msg):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_show_prints_the_design_and_its_aliases(capsys):
    assert main(["ablate", "show", "interactions"]) == 0
    out = capsys.readouterr().out
    assert "2^(4-1) resolution IV" in out and "kde*hed = hsv*highres" in out
