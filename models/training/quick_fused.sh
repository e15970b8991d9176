#!/bin/sh
# A one-session recipe for the fused model (docs/fused.md, "Quick recipe"): about 83,000
# utterances, two encoder runs and two stage-3 runs, all with a bfloat16 forward (--bf16),
# built into $OUT (default build/fused_quick), never into bundles/fused. It answers what
# training under 2 hours on this 2-core CPU gives; the shipped bundle is rebuild_fused.sh's.
# Deterministic from seed 0 with the same thread counts; resumable like rebuild_fused.sh.
#
#   sh models/training/quick_fused.sh      # ENC_STEPS=12000 LM_STEPS=6000 ENC2_STEPS=4000 LM2_STEPS=3000
set -eu
PY=${PY:-python}
D=data/fused
R=${RUNS:-runs/fused_quick}
OUT=${OUT:-build/fused_quick}
ENC_STEPS=${ENC_STEPS:-12000}
LM_STEPS=${LM_STEPS:-6000}
ENC2_STEPS=${ENC2_STEPS:-4000}
LM2_STEPS=${LM2_STEPS:-3000}
S="$PY -m models.training.speech_data"
T="$PY -m models.training.train_fused"
done_() { [ -f "$1" ] && echo "have $1"; }
stamp() { echo "== $(date +%H:%M:%S) $*"; }

stamp data
$S --n-train 4000 --n-eval 480
$S --only train --n-train 16000 --offset 4000
$S --only eval --n-eval 480 --pause-style break
$S --only dev
$S --only wide --n-wide 6000
$S --only accent --n-accent 6000
$S --only train --n-train 72400 --offset 64400 --pause-style break --pause-prob 0.4
$S --only train --n-train 104400 --offset 72400 --pause-style break --pause-prob 0.4
$S --only accent --n-accent 20000 --offset 6000
X="$D/speech_train_s0_n16000_from4000.npy $D/speech_wide_s0_n6000.npy $D/speech_accent_s0_n6000.npy"
X="$X $D/speech_train_s0_n72400_from64400_break_p0.4.npy"
# 46,000 utterances the first encoder run never hears (break-style and accented)
N="$D/speech_train_s0_n104400_from72400_break_p0.4.npy $D/speech_accent_s0_n20000_from6000.npy"
stamp text LM
done_ runs/textlm/final.pt || $PY -m models.training.train_lm --seed 0
stamp encoder
done_ $R/encoder_final.pt || $T encoder --preset medium --steps "$ENC_STEPS" --threads 2 --bf16 \
    --extra $X --prefix-s 1.2 --eval-every 2000 --log-every 200 --runs $R
stamp stage 3
done_ $R/lm_final.pt || $T lm --runs $R --steps "$LM_STEPS" --threads 2 --bf16 --text-mix 0.5 \
    --eot-label prefix --extra $X --confuse 0.15 --pause-token '<reserved_0>' --break-pauses inside
stamp audio head
done_ $R/audio_final.pt || $T audio --steps 1500 --threads 1 --runs $R
# the encoder once more on the unseen speech, then stage 3 again from the first one on the new
# encoder's rows, with the shipped z24's labels ($R/c holds the model that is exported)
# (the encoder takes N's caches accented first: the order of the measured run, which sets its batches)
stamp encoder, second run
mkdir -p $R/c
done_ $R/c/encoder_final.pt || $T encoder --preset medium --steps "$ENC2_STEPS" --lr 5e-4 --threads 2 \
    --bf16 --init $R/encoder_final.pt --extra $D/speech_accent_s0_n20000_from6000.npy \
    $D/speech_train_s0_n104400_from72400_break_p0.4.npy --prefix-s 1.2 --eval-every 2000 --log-every 200 --runs $R/c
cp $R/audio_final.pt $R/c/
stamp stage 3, second run
done_ $R/c/lm_final.pt || $T lm --runs $R/c --init-lm $R/lm_final.pt --steps "$LM2_STEPS" --lr 3e-4 \
    --text-mix 0.5 --eot-label prefix --heard-as thank=thanks --prefix-pauses --extra $X $N --threads 2 \
    --bf16 --confuse 0.15 --confuse-last 0.5 --pause-token '<reserved_0>' --break-pauses inside
stamp export
$PY -m models.training.export_fused --runs $R/c --out "$OUT"
$PY -m models.training.eot_tune --bundle "$OUT" --dev $D/speech_dev_s0_n4000.npy --tails 400 \
    --gates 1.0 --depths 20 --absolute-caps --write-manifest --rule 0.95,96,0.3,768 \
    --report reports/eot_tune_quick.md
$PY -m models.training.eval_fused --bundle "$OUT" --no-audio --report reports/fused_eval_quick.md
$PY -m models.training.eval_fused --bundle "$OUT" --no-audio --speech $D/speech_eval_s0_n480_break.npy \
    --report reports/fused_eval_quick_break.md
stamp done
