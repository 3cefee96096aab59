#!/usr/bin/env bash
# Issue 16's GPU figures: where the seed's configurations spend a step, and how fast each of the
# seed's eight commands trains.
#
#   bash benchmarks/speed_gpu.sh PART OUT [SECONDS]
#
# PART: profile (kernel_breakdown.py for the paper configuration, attention pooling, and the
# RFF / multi-band decoders as the seed's commands run them, i.e. with attention pooling), or
# seed (bench_seed.py: steady steps/s and peak memory of each seed command, 64 x 64, batch 32),
# or rff (bench_rff.py: the penultimate-RFF decoder's value-and-gradient, old concatenated
# readout against the fused one, with the phases at HIGHEST, at the backend's pick and at the
# other presets, and each one's phase and gradient error), or curves (curves_fused_xla.py: the
# fused encoder's curves against XLA's, TF32 against float32 as the yardstick), or both (seed,
# then profile), or all (seed, rff, profile), or phase (bench_seed.py --phase b --seeds 3 at
# FAE_LAB_PHASE_STEPS steps, default 50000, with --parallel-groups = the visible GPUs; the runs go
# to FAE_LAB_PHASE_RUNS, default runs/bench_phase_b in the checkout, which a warm machine keeps
# between calls: a call cut off by its limit leaves the groups stopped at a checkpoint and the next
# call continues them, so the phase's wall time is the sum of the calls' "phase wall" lines), or
# group (profile_group.py: the real training program of phase b's commands vmapped over 1, 3 and
# 9 members, wall and kernel time per member step, and the time of one evaluation). FAE_LAB_BENCH_STEPS (default 5000: an evaluation every 1,000, the findings runs' cadence; 1500 gives the shorter table of RESULTS.md) sets
# bench_seed's steps. Everything runs on the first visible GPU, one process at a time;
# every step is cut off when SECONDS (default 500) have passed since the start.
set -uo pipefail
part=${1:?PART}; out=${2:?OUT}; seconds=${3:-500}; steps=${FAE_LAB_BENCH_STEPS:-5000}
mkdir -p "$out"
left() { echo $((seconds - SECONDS)); }

seed() {
  [ "$(left)" -gt 30 ] || return
  timeout -s TERM "$(left)" python3 benchmarks/bench_seed.py --steps "$steps" \
    --json "$out/bench_seed.json" 2>&1 | tee "$out/bench_seed.log"
}

profile() {
  local configs=(
    ""
    "--pooling attention"
    "--pooling augmented_residual"
    "--pooling attention --decoder-type rff_output --rff-dim 256 --rff-sigmas 0.5,1.0,2.0,4.0"
    "--pooling attention --decoder-type rff_output --rff-dim 512"
    "--pooling attention --decoder-type rff_output --rff-dim 512 --rff-location coordinates"
  )
  for cfg in "${configs[@]}"; do
    local t; t=$(left); [ "$t" -gt 20 ] || break; [ "$t" -gt 120 ] && t=120
    # shellcheck disable=SC2086
    timeout -s TERM "$t" python3 benchmarks/kernel_breakdown.py --top 25 $cfg 2>&1 | grep -v "^W0\|^I0" \
      | tee -a "$out/profiles.txt"
  done
}

rff() {
  [ "$(left)" -gt 30 ] || return
  timeout -s TERM "$(left)" python3 benchmarks/bench_rff.py \
    --algorithms TF32_TF32_F32_X3,BF16_BF16_F32_X6,BF16_BF16_F32_X3,TF32_TF32_F32 \
    --json "$out/bench_rff.json" 2>&1 | grep -v "^W0\|^I0" | tee "$out/bench_rff.log"
}

curves() {
  [ "$(left)" -gt 60 ] || return
  timeout -s TERM "$(left)" python3 benchmarks/curves_fused_xla.py --out "$out/curves_runs" --steps 1500 \
    --json "$out/curves_fused_xla.json" 2>&1 | grep -v "^W0\|^I0" | tee "$out/curves_fused_xla.log"
}

group() {
  local runs=("phase_b_h1_lambda0.5 1,3,9" "phase_b_fourier_p1 1,9" "phase_b_combined 1")
  for r in "${runs[@]}"; do
    set -- $r
    [ "$(left)" -gt 30 ] || break
    timeout -s TERM "$(left)" python3 benchmarks/profile_group.py --command "$1" --members "$2" --top 30 --evaluate \
      --json "$out/profile_group.jsonl" 2>&1 | grep -v "^W0\|^I0" | tee -a "$out/profile_group.txt"
  done
}

phase() {
  local gpus runs start; gpus=$(nvidia-smi -L | wc -l); runs=${FAE_LAB_PHASE_RUNS:-runs/bench_phase_b}
  start=$SECONDS
  # timeout signals the whole process group: the phase's groups stop at a checkpoint.
  timeout -s TERM "$(left)" python3 benchmarks/bench_seed.py --phase b --seeds 3 \
    --phase-steps "${FAE_LAB_PHASE_STEPS:-50000}" --parallel-groups "$gpus" --out "$runs" \
    --json "$out/bench_phase.json" 2>&1 | grep -v "^W0\|^I0" | tee "$out/bench_phase.log"
  echo "phase wall: $((SECONDS - start)) s on $gpus GPU(s), runs in $runs" | tee -a "$out/bench_phase.log"
}

case $part in
  profile) profile ;;
  curves) curves ;;
  seed) seed ;;
  rff) rff ;;
  both) seed; profile ;;
  all) seed; rff; profile ;;
  phase) phase ;;
  group) group ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
