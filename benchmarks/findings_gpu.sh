#!/usr/bin/env bash
# The measured answer of docs/findings.md: phases a (the bottleneck ladder), b and c with three
# seeds each on generated data (4,096 samples, 64 x 64, 6 scales), one `fae-lab phase` per GPU.
#
#   bash benchmarks/findings_gpu.sh PART OUT [STEPS] [SECONDS]
#
# PART: ladder_b (GPU 0: phase a's ladder; GPU 1: phase b), c (GPU 0 and 1: the two halves of
# phase c) or rest (what the first call of 2026-11-29 left: GPU 0 the auto-decoder rung, then
# phase c's penultimate and coordinate RFF; GPU 1 phase c's multi-band decoder, then phase b's
# Fourier-weighted p = 1) or latent (the auto-decoder and the FAE with latents of 256 and 1,024). Each phase runs under OUT/runs/phase_<x>; every phase still running
# SECONDS (default 500) after the start is stopped with SIGTERM (a stopped run keeps a checkpoint
# and says so; rerunning reuses every finished run). The runs' small files (config, progress,
# final, metrics.zarr, ranking.csv, ladder.csv) are packed into OUT/<PART>_runs.tar.xz.
# long1, long2, long3: the seed's 50,000 steps (STEPS=50000) for the ladder's FAE and
# auto-decoder, a wider decoder, phase c's penultimate RFF and phase b's H1 (long3 also: the
# NTK benchmark and phase c's decoders with the NTK tracked, 5,000 steps), in three calls of
# at most 10 minutes, each resuming what the one before left
# (FAE_LAB_RUNS_FROM="long1_runs.tar.xz long1_checkpoints.tar.xz").
# queue: the rest of phases b and c at 50,000 steps (see the part; 2026-11-30). FAE_LAB_RUNS_DIR
# puts the runs elsewhere than OUT/runs; FAE_LAB_N_RECONSTRUCTIONS (default 4) sets the kept
# reconstructions per evaluation (1 keeps a stopped group's resume tarball small).
set -uo pipefail
export XZ_OPT=${XZ_OPT:--T0 -1}  # the packing must fit in the call
part=${1:?PART}; out=${2:?OUT}; steps=${3:-20000}; seconds=${4:-500}
runs=${FAE_LAB_RUNS_DIR:-$out/runs}
mkdir -p "$out" "$runs"
common=(--seeds 3 --max-steps "$steps")
train=(-- --eval-every 1000 --log-every 100 --n-reconstruction-samples "${FAE_LAB_N_RECONSTRUCTIONS:-4}")
# FAE_LAB_RUNS_FROM: tarballs (space separated) of earlier parts, unpacked first: finished runs
# are reused, stopped ones resume from their checkpoints.
for t in ${FAE_LAB_RUNS_FROM:-}; do tar -xJf "$t" -C "$runs"; done

phase() {  # GPU NAME ARGS...
  local gpu=$1 name=$2; shift 2
  local left=$((seconds - SECONDS))
  [ "$left" -gt 30 ] || { echo "$name: not started (no time left)" | tee -a "$out/summary.txt"; return; }
  CUDA_VISIBLE_DEVICES=$gpu timeout -s TERM "$left" python3 -m fae_lab phase "$@" \
    "${common[@]}" "${train[@]}" >"$out/$name.log" 2>&1
  echo "$name: exit $? after $SECONDS s" | tee -a "$out/summary.txt"
}

wide() {  # GPU: the baseline's settings with a 5 x 256 decoder, 3 seeds (a sweep of one value)
  local left=$((seconds - SECONDS))
  [ "$left" -gt 30 ] || { echo "wide: not started (no time left)" | tee -a "$out/summary.txt"; return; }
  CUDA_VISIBLE_DEVICES=$1 timeout -s TERM "$left" python3 -m fae_lab sweep --runs "$runs/wide_decoder" \
    --grid "decoder-hidden=256,256,256,256,256;" --seeds 3 -- --training-mode multi_scale --loss-type l2 \
    --decoder-type standard --track-spectral-metrics --generate-n-samples 4096 --max-steps "$steps" \
    --eval-every 1000 --log-every 100 --n-reconstruction-samples 4 >"$out/wide.log" 2>&1
  echo "wide: exit $? after $SECONDS s" | tee -a "$out/summary.txt"
}

share_baseline() {  # copy phase a's finished baselines into the other phases (same settings)
  for d in "$@"; do
    mkdir -p "$runs/$d"
    for b in "$runs"/phase_a/baseline_multi_scale_s*; do
      [ -d "$b" ] && grep -q '"status": "finished"' "$b/progress.json" && [ ! -e "$runs/$d/${b##*/}" ] \
        && cp -r "$b" "$runs/$d/"
    done
  done
}

case $part in
  ladder_b)
    phase 0 ladder a --runs "$runs/phase_a" \
      --only phase_a_ladder_decoder_alone_s0,phase_a_ladder_decoder_alone_s1,phase_a_ladder_decoder_alone_s2,phase_a_ladder_auto_decoder &
    phase 1 phase_b b --runs "$runs/phase_b" &
    ;;
  c)
    phase 0 phase_c1 c --runs "$runs/phase_c1" \
      --only phase_c_rff512_penultimate,phase_c_rff512_coordinates,phase_c_multiband_4scales &
    phase 1 phase_c2 c --runs "$runs/phase_c2" \
      --only phase_c_rff256_penultimate,phase_c_rff1024_penultimate,phase_c_rff512_both &
    ;;
  rest)
    for d in phase_c_a phase_c_b; do  # phase c's baseline is phase a's (same settings, finished)
      mkdir -p "$runs/$d" && cp -r "$runs"/phase_a/baseline_multi_scale_s* "$runs/$d/" 2>/dev/null
    done
    (phase 0 ladder a --runs "$runs/phase_a" --only phase_a_ladder_auto_decoder
     phase 0 phase_c_a c --runs "$runs/phase_c_a" --only phase_c_rff512_penultimate,phase_c_rff512_coordinates) &
    (phase 1 phase_c_b c --runs "$runs/phase_c_b" --only phase_c_multiband_4scales
     phase 1 phase_b b --runs "$runs/phase_b" --only phase_b_fourier_p1.0) &
    ;;
  latent)  # is it the 64-number latent? the auto-decoder and the FAE with latents of 256 and 1,024
    for rung in auto_decoder fae; do
      gpu=$([ $rung = fae ] && echo 1 || echo 0)
      (CUDA_VISIBLE_DEVICES=$gpu timeout -s TERM "$seconds" python3 -m fae_lab sweep --runs "$runs/latent_$rung" \
         --grid latent_dim=256,1024 --seeds 3 -- --rung $rung --max-steps "$steps" --generate-n-samples 4096 \
         --eval-every 1000 --log-every 100 >"$out/latent_$rung.log" 2>&1
       echo "latent_$rung: exit $? after $SECONDS s" | tee -a "$out/summary.txt") &
    done
    ;;
  long1)  # the seed's 50,000 steps: GPU 0 the ladder's FAE (the baseline) and auto-decoder;
          # GPU 1 a wider decoder (5 x 256, the ladder's next question), as a 3-seed sweep
    phase 0 ladder a --runs "$runs/phase_a" --only phase_a_ladder_auto_decoder &
    wide 1 &
    ;;
  long2)  # GPU 0 phase c's penultimate RFF (the seed's claim); GPU 1 phase b's H1, then
          # the wider decoder (";" keeps the comma-separated sizes one grid value)
    share_baseline phase_c phase_b
    phase 0 phase_c c --runs "$runs/phase_c" --only phase_c_rff512_penultimate &
    (phase 1 phase_b b --runs "$runs/phase_b" --only phase_b_h1_lambda0.5; wide 1) &
    ;;
  long3)  # GPU 1 the wider decoder to its end; GPU 0 the NTK benchmark at 64 x 64, then phase c's
          # decoders for 5,000 steps with the decoder's NTK at steps 0, 2,500 and 5,000
    wide 1 &
    (CUDA_VISIBLE_DEVICES=0 timeout -s TERM 120 python3 benchmarks/bench_ntk.py --resolution 64 --top 64 \
       --out "$out/bench_ntk_h200_64.json" >"$out/bench_ntk.log" 2>&1
     echo "bench_ntk: exit $? after $SECONDS s" | tee -a "$out/summary.txt"
     CUDA_VISIBLE_DEVICES=0 timeout -s TERM $((seconds - SECONDS)) python3 -m fae_lab phase c \
       --runs "$runs/ntk_c" --seeds 3 --max-steps 5000 \
       --only phase_c_rff512_penultimate,phase_c_rff512_coordinates,phase_c_multiband_4scales \
       -- --eval-every 250 --log-every 50 --n-reconstruction-samples 4 --track-ntk-every 2500 \
       >"$out/ntk_c.log" 2>&1
     echo "ntk_c: exit $? after $SECONDS s" | tee -a "$out/summary.txt") &
    ;;
  queue)  # what long1-long3 left, in order of importance: each GPU works through its list, one
           # phase group at a time, skipping groups whose three seeds finished; rerun until all
           # finish (FAE_LAB_RUNS_FROM: the previous call's tarballs). FAE_LAB_QUEUE="c:NAME b:NAME"
           # replaces GPU 0's list and FAE_LAB_QUEUE_GPU1 GPU 1's (unset: GPU 1 idles). On one GPU both lists share it, which gains nothing
           # (two groups run at half speed each: 2026-11-30), so give one list there.
    share_baseline phase_b phase_c
    queue() {  # GPU PHASE:EXPERIMENT ...
      local gpu=$1; shift
      for item in "$@"; do
        local ph=${item%%:*} name=${item#*:}
        local done_seeds
        done_seeds=$(grep -l '"status": "finished"' "$runs"/phase_"$ph"/"$name"_s*/progress.json 2>/dev/null | wc -l)
        [ "$done_seeds" -ge 3 ] && continue
        phase "$gpu" "$name" "$ph" --runs "$runs/phase_$ph" --only "$name"
      done
    }
    if [ -n "${FAE_LAB_QUEUE:-}" ]; then
      # shellcheck disable=SC2086
      queue 0 $FAE_LAB_QUEUE &
      # FAE_LAB_QUEUE_GPU1: a second list, on GPU 1
      # shellcheck disable=SC2086
      [ -n "${FAE_LAB_QUEUE_GPU1:-}" ] && queue 1 $FAE_LAB_QUEUE_GPU1 &
    else
      second=1
      if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -lt 2 ]; then
        second=0; export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
      fi
      # Phases b and c's groups that the calls up to 2026-11-30 (second session) left; the third
      # session's three calls finished them all (findings_queue8_runs.tar.xz), so with that
      # tarball in FAE_LAB_RUNS_FROM every item is skipped, and without it the lists rerun them.
      # A stopped group resumes only with the --n-reconstruction-samples it started with
      # (FAE_LAB_N_RECONSTRUCTIONS: 1 for the groups of queue5 and later).
      queue 0 c:phase_c_multiband_4scales c:phase_c_rff512_both &
      queue "$second" b:phase_b_fourier_p1.0 b:phase_b_combined c:phase_c_rff1024_penultimate &
    fi
    ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
wait
# Small files of every run; the checkpoints and reconstructions.zarr too of runs not finished,
# so that a later call resumes them (a resume needs the whole run store; FAE_LAB_RUNS_FROM takes
# the runs tarball and the joined resume tarball).
(cd "$runs" && find . \( -name checkpoints -o -name reconstructions.zarr \) -prune -o -type f -print \
  | tar -cJf "$out/${part}_runs.tar.xz" -T -)
# A file back from the device may hold at most 16 MiB (8 files a call): the stopped runs' tarball
# comes back in 15 MiB parts (cat "$out"/${part}_resume.tar.xz.part-* > resume.tar.xz).
(cd "$runs" && for p in */*/progress.json; do
   [ -f "$p" ] && ! grep -q '"status": "finished"' "$p" && [ -d "${p%/progress.json}/checkpoints" ] \
     && echo "${p%/progress.json}/checkpoints" && echo "${p%/progress.json}/reconstructions.zarr"
 done | tar -cJf - -T - | split -b 15M - "$out/${part}_resume.tar.xz.part-")
for f in "$runs"/*/ranking.csv "$runs"/*/ladder.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
tail -n 30 "$out"/*.log
