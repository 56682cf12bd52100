#!/usr/bin/env bash
# The latent-diffusion runs behind the README's numbers, as run on one NVIDIA H200 through the device tool: the KL-f4
# first stage (two KL weights side by side, the one whose held-out reconstructions the oracle reads best kept), then the
# text-to-image and class-conditional models on its latents, side by side on the one GPU. Everything lands in $OUT:
# logs, metrics, sample grids, and the text-to-image folder (weights included) as a tar split into 15 MB parts.
#
#   OUT=/tmp/out SMOKE=1 bash benchmarks/device_latent_diffusion.sh     # the same chain at toy size, on a CPU
#   VAE=folder CLASS=0 TRAIN_SECONDS=110 bash benchmarks/device_latent_diffusion.sh   # a trained first stage, text only,
#                                                                                     # training stopped after 110 s
set -uo pipefail
OUT=${OUT:-/tmp/ldm-out}
R=${RUNS:-/tmp/ldm-runs}
mkdir -p "$OUT" "$R"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_GENZOO_CACHE=$R/cache TQDM_MININTERVAL=30
if [ "${SMOKE:-0}" = 1 ]; then
  VAE_STEPS=20; VAE_WIDTHS="8 16 16"; TEXT_STEPS=6; CLASS_STEPS=6; N_TRAIN=512; N_EVAL=64; PRESET=tiny; BATCH=32; GEN=32; MP=no
else
  VAE_STEPS=${VAE_STEPS:-4000}; VAE_WIDTHS="32 64 128"; TEXT_STEPS=${TEXT_STEPS:-7000}; CLASS_STEPS=4000; N_TRAIN=${N_TRAIN:-50000}; N_EVAL=1000; PRESET=small; BATCH=128; GEN=1000; MP=bf16
fi
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/device.txt"

if [ -z "${VAE:-}" ]; then
# 1. the first stage: KL-f4 (three levels: 32×32 → 8×8×4 latents), two KL weights side by side
for beta in ${BETAS:-0.001 0.01}; do
  python3 training_scripts/train_autoencoder.py --model vae --latent_type spatial --latent_channels 4 \
    --block_out_channels $VAE_WIDTHS --beta $beta --num_shapes 2 --mixed_precision $MP --train_batch_size 64 \
    --max_train_steps $VAE_STEPS --lr_warmup_steps 200 --iwae_samples 0 --num_generated 64 --validation_steps 100000 \
    --checkpointing_steps 100000 --output_dir "$R/kl-f4-beta$beta" 2>&1 | tr '\r' '\n' | grep -av " it/s\| s/it" > "$OUT/vae-beta$beta.log" &
done
wait
set -- ${BETAS:-0.001 0.01}
best="$R/kl-f4-beta$1"; best_validity=-1
for beta in ${BETAS:-0.001 0.01}; do
  [ $# = 1 ] && break  # one first stage: nothing to choose
  python3 benchmarks/first_stage_reconstructions.py "$R/kl-f4-beta$beta" --num_images $N_EVAL --output "$R/kl-f4-beta$beta/reconstructions.json" > /dev/null 2>>"$OUT/errors.log"
  v=$(python3 -c "import json; r=json.load(open('$R/kl-f4-beta$beta/reconstructions.json')); print(min(r['1_shape']['oracle_validity_reconstructions'], r['2_shape']['oracle_validity_reconstructions']))")
  echo "beta $beta: reconstruction validity (worse of 1/2 shapes) $v"
  if python3 -c "import sys; sys.exit(0 if $v > $best_validity else 1)"; then best="$R/kl-f4-beta$beta"; best_validity=$v; fi
done
else
  best=$VAE
fi
echo "first stage: $best"

# 2. text-to-image and class-conditional latent diffusion on its latents, side by side
common="--vae $best --unet_preset $PRESET --train_batch_size $BATCH --max_eval_samples $N_EVAL --num_generated $GEN \
  --mixed_precision $MP --validation_steps 2000 --checkpointing_steps 100000 --learning_rate 3e-4 --lr_warmup_steps 500"
budget=${TRAIN_SECONDS:+--max_train_seconds $TRAIN_SECONDS}
python3 training_scripts/train_latent_diffusion.py $common --conditioning text --max_train_samples $N_TRAIN \
  --max_train_steps $TEXT_STEPS $budget --output_dir "$R/shapes-ldm-text" 2>&1 | tr '\r' '\n' | grep -av " it/s\| s/it" > "$OUT/ldm-text.log" &
if [ "${CLASS:-1}" = 1 ]; then
python3 training_scripts/train_latent_diffusion.py $common --conditioning class --max_train_samples $N_TRAIN \
  --max_train_steps $CLASS_STEPS $budget --output_dir "$R/shapes-ldm-class" 2>&1 | tr '\r' '\n' | grep -av " it/s\| s/it" > "$OUT/ldm-class.log" &
fi
wait

# 3. what comes back: logs and numbers in one tar, the text-to-image folder (weights) split into parts
tar -C "$R" -czf "$OUT/results.tar.gz" --exclude='checkpoint-*' --exclude='cache' --exclude='*.safetensors' --exclude='logs' .
tar -C "$R" -cf - --exclude='checkpoint-*' --exclude='logs' --exclude='cache' . | split -b 15m - "$OUT/text-model.tar.part-"
ls -la "$OUT"
for f in "$OUT"/*.log; do echo "== $f"; grep -a "metrics:\|saved \|Traceback\|Error" "$f" | tail -n 4; done
