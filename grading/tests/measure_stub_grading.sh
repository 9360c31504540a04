#!/usr/bin/env bash
# Before and after, in one run: `llmfs --help`, and `llmfs grade -m NN` on a fresh release's untouched stubs, for a
# release made by an older commit and one made by this checkout, interleaved, twice (figures in docs/RESULTS.md).
#   bash grading/tests/measure_stub_grading.sh OLD_COMMIT        (needs this checkout's .venv and $LLMFS_DATA)
set -euo pipefail
OLD=$1
REPO=$(git rev-parse --show-toplevel)
W=$(mktemp -d)
trap 'git -C "$REPO" worktree remove --force "$W/old-course" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
PY="$REPO/.venv/bin/python"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
lend() {  # a venv that borrows this one's packages (torch, transformers, ...) and installs one course editable
    python3 -m venv --without-pip "$1"
    echo "$SITE" > "$("$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/lent.pth"
    "$PY" -m pip --python "$1/bin/python" install -q --no-deps --no-build-isolation --no-index -e "$2" >/dev/null
}
git -C "$REPO" worktree add -f "$W/old-course" "$OLD" >/dev/null 2>&1
for side in old new; do
    course="$W/old-course"; [ "$side" = new ] && course="$REPO"
    lend "$W/venv-$side-course" "$course"
    (cd "$course" && "$W/venv-$side-course/bin/llmfs" release "$W/release-$side" >/dev/null)
    lend "$W/venv-$side" "$W/release-$side"
done
for run in 1 2; do
    for side in old new; do
        echo "$side --help $( { /usr/bin/time -f %e "$W/venv-$side/bin/llmfs" --help >/dev/null; } 2>&1 ) s"
        for m in 01 02 03 04 05 06 07 08; do
            t=$( { cd "$W/release-$side" && /usr/bin/time -f %e "$W/venv-$side/bin/llmfs" grade -m $m >/dev/null; } 2>&1 )
            echo "$side grade -m $m $(echo "$t" | tail -1) s"
        done
    done
done
