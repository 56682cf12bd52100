"""benchmarks/data_path.py: its flags are checked before anything runs, and the throughput comparison trains the
same step from the in-RAM tensor and from the memory-mapped cache and reports both speeds and their ratio."""

from __future__ import annotations

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("data_path", folder="benchmarks")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["rss", "--script", "latent_diffusion"], "--script latent_diffusion needs --vae"),
        (["rss", "--num_images", "10"], "--num_images must be ≥ 100, got [10]"),
        (["throughput", "--num_images", "50"], "--num_images must be ≥ 100, got 50"),
    ],
)
def test_bad_flags_are_refused_naming_the_value(bench, argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_throughput_reads_both_paths_and_reports_their_ratio(bench, tmp_path):
    output = tmp_path / "throughput.json"
    result = bench.main(
        ["throughput", "--num_images", "128", "--batch_size", "8", "--steps", "2", "--rounds", "1",
         "--mixed_precision", "no", "--output", str(output)]
    )
    assert result["in_ram_images_per_s"] > 0 and result["cache_images_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["cache_images_per_s"] / result["in_ram_images_per_s"], rel=0.01)
    assert output.exists()
