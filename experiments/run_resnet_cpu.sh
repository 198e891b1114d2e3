#!/usr/bin/env bash
# Issue 26's cpu-scale chain, (re)started idempotently at the lowest priority:
#   experiments/run_resnet_cpu.sh            start (or say it is already running)
#   experiments/run_resnet_cpu.sh --status   what runs, what is done
#   experiments/run_resnet_cpu.sh --stop     stop it (the same command resumes later)
# Environment: WORKDIR (default /work/runs_cpu, outside the repository), PYTHON (default
# the checkout's .venv/bin/python), CODE_REF (the
# commit to run; default: the one recorded in $WORKDIR/code_commit at the first start, else
# HEAD). The code runs from a git worktree at that commit ($WORKDIR/code), so edits in the
# main checkout do not change runs half-way; a new CODE_REF moves the worktree (finished
# runs stay valid while their configs are unchanged: the harness checks every run's key).
#
# Steps, one process at a time (each resumes: finished runs are skipped, unfinished ones
# continue from their checkpoints):
#   1. lr_sweep's AlexNet cells (minutes)    (reproduce --table=lr_sweep --runs=alexnet)
#   2. the AlexNet ablation, seed 0 (~20 min) (experiments.ablation_asap_alexnet --seeds=0)
#   3. lr_sweep's ResNet cells               (reproduce --table=lr_sweep --runs=resnet)
#   4. wt5.2 (ResNet-18, ResNet-18 nsc; its AlexNet cells are the ablation's references)
#   5. ablation seed 1;  6. wt5.4;  7. ablation seed 2;  8. wt5.5;  9. wt_k4
#  10. every other table (reproduce --table=all); 11. the report into $WORKDIR/report
# Priority: the chain starts its own session (setsid), whose autogroup gets nice 19
# (/proc/self/autogroup: with sched_autogroup on, plain nice is useless between sessions,
# docs/notes/reproduce.md "Scheduling"), and every process also runs under nice -n 19.
set -u
WORKDIR=${WORKDIR:-/work/runs_cpu}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDFILE=$WORKDIR/chain.pid
LOG=$WORKDIR/chain.log

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  --status)
    if running; then
      pid=$(cat "$PIDFILE")
      echo "running: pid $pid, log $LOG"
      ps -s "$pid" -o pid=,stat=,time=,args= | cut -c1-120
      if ps -s "$pid" -o stat= | grep -q '^T'; then
        echo "STOPPED (state T): someone paused the chain, e.g. for a timing measurement;"
        echo "  kill -CONT -- -$pid resumes it once that is over"
      fi
    else echo "not running"; fi
    echo "code: $(cat "$WORKDIR/code_commit" 2>/dev/null || echo none)"
    for t in lr_sweep wt5.2 wt5.4 wt5.5 wt_k4 ablation_asap_alexnet; do
      [ -d "$WORKDIR/$t" ] || continue
      done_n=$(find -L "$WORKDIR/$t" -mindepth 2 -maxdepth 2 -name results.json | wc -l)
      echo "$t: $done_n runs finished"
    done
    grep -v "^INFO:absl\|^WARNING:absl" "$LOG" 2>/dev/null | tail -n 5
    exit 0 ;;
  --stop)
    if running; then
      pid=$(cat "$PIDFILE")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"  # the chain's own session
      echo "stopped pid $pid (the trainer saves at a clean point; re-run to resume)"
    else echo "not running"; fi
    exit 0 ;;
  --inner) ;;
  "")
    if running; then echo "already running: pid $(cat "$PIDFILE"), log $LOG"; exit 0; fi
    mkdir -p "$WORKDIR"
    ref=${CODE_REF:-$(cat "$WORKDIR/code_commit" 2>/dev/null || git -C "$REPO" rev-parse HEAD)}
    ref=$(git -C "$REPO" rev-parse "$ref") || exit 1
    if [ -d "$WORKDIR/code" ]; then
      git -C "$WORKDIR/code" checkout -q --detach "$ref" || exit 1
    else
      git -C "$REPO" worktree add -q --detach "$WORKDIR/code" "$ref" || exit 1
    fi
    echo "$ref" > "$WORKDIR/code_commit"
    export RUN_RESNET_CPU_PYTHON=${PYTHON:-$REPO/.venv/bin/python}
    setsid nohup "$WORKDIR/code/experiments/run_resnet_cpu.sh" --inner \
      >> "$LOG" 2>&1 < /dev/null &
    echo "started: pid $!, code $ref, log $LOG"
    exit 0 ;;
  *) echo "usage: $0 [--status|--stop]"; exit 2 ;;
esac

# --inner: the chain itself, in its own session
echo $$ > "$PIDFILE"
trap 'rm -f "$PIDFILE"' EXIT
echo 19 > /proc/self/autogroup 2>/dev/null || echo "warning: could not set the autogroup's nice"
renice -n 19 -p $$ > /dev/null
cd "$WORKDIR/code" || exit 1
# Every 5 min, $WORKDIR/cpu.log gets: time, CPU seconds this chain start has used (its
# finished steps + the live ones), and the newest metrics.jsonl with its epochs done: the
# cost per epoch is read from there (no timing is taken; the machine is shared).
tck=$(getconf CLK_TCK)
(
  while kill -0 $$ 2>/dev/null; do
    read -r -a f < "/proc/$$/stat"
    t=$(( f[15] + f[16] ))
    for p in $(pgrep -s $$); do
      [ "$p" = "$$" ] && continue
      read -r -a g < "/proc/$p/stat" 2>/dev/null || continue
      t=$(( t + g[13] + g[14] + g[15] + g[16] ))
    done
    m=$(find "$WORKDIR" -path "$WORKDIR/code" -prune -o -name metrics.jsonl -mmin -600 \
        -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2)
    echo "$(date -u '+%F %T') cpu_s=$(( t / tck )) ${m:-none} epochs=$( [ -n "$m" ] && wc -l < "$m" || echo 0)"
    sleep 300
  done
) >> "$WORKDIR/cpu.log" 2>/dev/null &
PY=$RUN_RESNET_CPU_PYTHON  # the checkout's venv; its editable alearn yields to the cwd's code
step() {
  echo "== $(date -u '+%F %T') UTC: $*"
  nice -n 19 "$PY" "$@"
  rc=$?
  echo "== CPU time of the chain so far (user, system; this start only): $(times | tail -n 1)"
  if [ $rc -ne 0 ]; then echo "== step failed (exit $rc): $*; chain stopped"; exit $rc; fi
}
R=(-m experiments.reproduce --scale=cpu "--workdir=$WORKDIR")
A=(-m experiments.ablation_asap_alexnet "--workdir=$WORKDIR")
step "${R[@]}" --table=lr_sweep --runs=alexnet
step "${A[@]}" --seeds=0
step "${R[@]}" --table=lr_sweep --runs=resnet
step "${R[@]}" --table=wt5.2
step "${A[@]}" --seeds=1
step "${R[@]}" --table=wt5.4
step "${A[@]}" --seeds=2
step "${R[@]}" --table=wt5.5
step "${R[@]}" --table=wt_k4
# Every other table of the report (AL, FoA; finished runs are skipped), then the report
# itself into the workdir (docs/results is regenerated from it by hand, with the preamble).
step "${R[@]}" --table=all
step -m experiments.report "--workdir=$WORKDIR" "--out=$WORKDIR/report" \
  --preamble=docs/results/preamble.md
echo "== $(date -u '+%F %T') UTC: chain finished"
