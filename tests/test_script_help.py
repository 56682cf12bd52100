"""`python training_scripts/train_*.py --help` answers before torch, diffusers, transformers or datasets are imported
(those imports take 10-15 s on a 2-core machine), and says in full what the script does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts import ROOT, load_script

HEAVY = ("torch", "diffusers", "transformers", "datasets", "accelerate")
TRAINING_SCRIPTS = sorted(path.stem for path in (ROOT / "training_scripts").glob("train_*.py"))
# run the script as `python training_scripts/X.py --help` does (its folder first on sys.path), then list what loaded
PROBE = """
import runpy, sys
path = sys.argv[1]
sys.path.insert(0, path.rsplit("/", 1)[0])
sys.argv = [path, "--help"]
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exit:
    code = exit.code
else:
    code = "no exit"
heavy = [name for name in {heavy!r} if name in sys.modules]
print("EXIT", code, "HEAVY", ",".join(heavy) or "-")
""".format(heavy=HEAVY)


@pytest.mark.parametrize("name", TRAINING_SCRIPTS)
def test_help_answers_before_the_heavy_imports(name):
    path = str(ROOT / "training_scripts" / f"{name}.py")
    result = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    help_text, _, verdict = result.stdout.rpartition("EXIT")
    assert verdict.split() == ["0", "HEAVY", "-"], f"{name} --help imported {verdict}"
    assert help_text.startswith("usage:") and "--output_dir" in help_text
    description = help_text.split("\n\n")[1].replace("\n", " ")
    assert description.rstrip().endswith((".", ")")), f"the description stops mid-sentence: {description!r}"


def test_the_scripts_flag_choices_are_the_models():
    """The choices a parser names before the models are imported are the ones the models take."""
    from hf_genzoo.models import gan
    from hf_genzoo.pipelines import pipeline_gan

    autoencoder, gan_script = load_script("train_autoencoder"), load_script("train_gan")
    assert sorted(autoencoder.MODEL_VARIANTS) == sorted(autoencoder.MODEL_NAMES)
    assert gan_script.GAN_LOSSES == gan.GAN_LOSSES
    assert gan_script.GENERATOR_UPSAMPLINGS == gan.GENERATOR_UPSAMPLINGS
    assert gan_script.DISCRIMINATOR_POOLINGS == gan.DISCRIMINATOR_POOLINGS
    assert gan_script.REJECTION_SCORES == pipeline_gan.REJECTION_SCORES
