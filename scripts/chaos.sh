#!/usr/bin/env bash
# The random-kill run of the service at full size (docs/chaos.md): N jobs (default 10,000) of
# short real clips, gate rejections, broken files and stuck pipes go through `speechmill serve`
# and several `speechmill worker` processes twice, once undisturbed and once while a seeded
# killer sends SIGKILL to random workers and restarts them. It fails unless every job ends in
# exactly one final state with the same outputs in both runs. It is the CI test
# crates/speechmill/tests/chaos.rs with more jobs, built in release mode.
#
# usage: scripts/chaos.sh [N] [--seed S] [--postgres] [--debug]
#   --postgres  run the queue on a PostgreSQL database created (and dropped) on 127.0.0.1:5432
#   --debug     use the debug build (slower; saves the release build)
set -euo pipefail

jobs=10000
seed=""
backend=sqlite
profile=(--release)
while (($#)); do
    case "$1" in
        --seed)
            [ $# -ge 2 ] || { echo "chaos: --seed needs a value" >&2; exit 2; }
            seed="$2"
            shift 2
            ;;
        --postgres) backend=postgres; shift ;;
        --debug) profile=(); shift ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *[!0-9]* | "") echo "usage: scripts/chaos.sh [N] [--seed S] [--postgres] [--debug]" >&2; exit 2 ;;
        *) jobs="$1"; shift ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh >&2

export SPEECHMILL_CHAOS_JOBS="$jobs"
if [ -n "$seed" ]; then
    export SPEECHMILL_CHAOS_SEED="$seed"
fi
test_name="random_worker_kills_on_${backend}_leave_every_job_final_once_with_the_undisturbed_outputs"
echo "chaos: $jobs jobs on $backend${seed:+, seed $seed}" >&2
cargo test "${profile[@]}" -p speechmill --test chaos -- --exact "$test_name" --nocapture
