#!/usr/bin/env bash
# The data-safety trial (issue 8), as a new user would run it: each case's command, exit
# status, the message printed and what is left on disk.
#
#   REFUSALSCOPE_CACHE=/tmp/cache scripts/reliability.sh [WORKDIR]
#
# Uses the default organism (built on first use, ~10 min on 2 cores) with a small run
# config (~1 min per uncached run). The full-disk and free-space cases mount small tmpfs
# folders and need root; they are skipped otherwise.
set -u
W=$(realpath -m "${1:-/tmp/refusalscope-reliability}")
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 1
export REFUSALSCOPE_CACHE=${REFUSALSCOPE_CACHE:-$W/cache}

title() { printf '\n### %s\n' "$*"; }
# run a command; print its exit status and the last lines of its error output
show() {
  printf '$ %s\n' "$*"
  "$@" >"$W/last.out" 2>"$W/last.err"
  echo "rc=$?"
  tr '\r' '\n' <"$W/last.err" | grep -v '^\s*$' | grep -v '%|' | tail -n "${LINES_SHOWN:-2}" | cut -c1-600
}
cached() {  # which stages a run loaded from the cache
  python - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]), parse_constant=lambda c: sys.exit(f"non-strict JSON: {c}"))
print("cached:", " ".join(f"{k}={'yes' if v['cached'] else 'NO'}" for k, v in r["stages"].items()))
EOF
}
listing() { printf '  left in %s: %s\n' "$1" "$(ls -A "$1" | tr '\n' ' ')"; }

title "0. the organism, exported once (model, SAEs, prompt files in refusal_direction's layout)"
show refusalscope organism build --out org
listing org
python - <<'EOF'
import json
from pathlib import Path
from refusalscope.organism.build import load_organism
org = load_organism(Path("org"))
d = Path("data/splits"); d.mkdir(parents=True)
for name, prompts in org.data().splits.items():
    rows = [{"instruction": p.instruction, "category": p.category, "meta": p.meta} for p in prompts]
    (d / f"{name}.json").write_text(json.dumps(rows, indent=1))
EOF
cp -r org/model model && cp -r org/saes saes
config() {  # config(model_dir, sae_dir, data_dir, extra toml)
  cat <<EOF
judge = "organism"
[model]
path = "$1"
[saes.folders]
$(for l in 0 1 2 3 4 5; do echo "$l = \"$2/layer_$l\""; done)
[prompts]
dataset_dir = "$3"
n_train = 32
n_val = 16
n_test = 16
${4:-}
[direction]
n_sweep = 16
[evaluation]
sweep_c = [0.0, -3.0]
sweep_k = [10, 20]
n_sweep = 16
max_new_tokens = 32
n_induction = 16
n_capability = 16
induction_multiples = [1.0, 4.0]
add_coeffs = [1.0]
EOF
}
config "$W/model" "$W/saes" "$W/data" >small.toml

title "1. organism build --out into a folder holding the user's files"
mkdir -p X/mywork && echo hi >X/thesis.tex
show refusalscope organism build --out X
listing X
(cd X && show refusalscope organism build --out .)
listing X
show refusalscope organism build --out org   # our own earlier copy: replaced
listing org
echo mine >org/notes.txt
show refusalscope organism build --out org   # ...unless the user put a file in it
listing org

title "2. cache keys follow contents, not paths"
show refusalscope run --config small.toml --out R && cached R/results.json
show refusalscope run --config small.toml --out R && cached R/results.json
mv model model2 && mv saes saes2
config "$W/model2" "$W/saes2" "$W/data" >moved.toml
show refusalscope run --config moved.toml --out R && cached R/results.json
python - <<'EOF'  # other weights, same path, same size
from safetensors.torch import load_file, save_file
f = "model2/model.safetensors"; t = load_file(f)
name = next(k for k in t if k.endswith("mlp.up_proj.weight")); t[name] = t[name] * 1.05
save_file(t, f, metadata={"format": "pt"})
EOF
show refusalscope run --config moved.toml --out R && cached R/results.json
python - <<'EOF'
from safetensors.torch import load_file, save_file
f = "saes2/layer_3/sae_weights.safetensors"; t = load_file(f)
t["W_dec"] = t["W_dec"].flip(0); save_file(t, f)
EOF
show refusalscope run --config moved.toml --out R && cached R/results.json

title "3. NaN: in an SAE decoder, in a model weight, in a cached direction; strict JSON"
cp -r saes2 saes_nan && python - <<'EOF'
from safetensors.torch import load_file, save_file
f = "saes_nan/layer_2/sae_weights.safetensors"; t = load_file(f)
t["W_dec"][17, 4] = float("nan"); save_file(t, f)
EOF
config "$W/model2" "$W/saes_nan" "$W/data" >nan_sae.toml
show refusalscope run --config nan_sae.toml --out R_nan
[ -e R_nan ] && listing R_nan || echo "  R_nan not created"
cp -r model2 model_nan && python - <<'EOF'
from safetensors.torch import load_file, save_file
f = "model_nan/model.safetensors"; t = load_file(f)
name = next(k for k in t if "layers.1." in k and k.endswith("down_proj.weight"))
t[name][3, 5] = float("inf"); save_file(t, f, metadata={"format": "pt"})
EOF
config "$W/model_nan" "$W/saes2" "$W/data" >nan_model.toml
show refusalscope run --config nan_model.toml --out R_nan
python - <<'EOF'  # poison the cached direction of the last good run
import json, os
from pathlib import Path
from safetensors.torch import load_file, save_file
key = json.load(open("R/results.json"))["cache_keys"]["direction"]
f = Path(os.environ["REFUSALSCOPE_CACHE"]) / "runs/direction" / key / "direction.safetensors"
t = load_file(f); t["r"][t["layer"]][7] = float("nan"); save_file(t, f)
print(f"  poisoned r[{int(t['layer'])}][7] in {f}")
EOF
show refusalscope run --config moved.toml --out R --force candidates
python -c "import json; json.load(open('R/results.json'), parse_constant=lambda c: exit('NaN in results.json')); print('  R/results.json: strict JSON')"
show refusalscope run --config moved.toml --out R --force direction && cached R/results.json

title "4. output sets: --out checked first, a full disk keeps the previous set, stale temps"
echo x >afile
start=$(date +%s.%N)
show refusalscope run --config moved.toml --out afile
echo "  refused after $(echo "$(date +%s.%N) - $start" | bc | cut -c1-4) s"
if [ "$(id -u)" = 0 ]; then
  mkdir -p tiny full
  mount -t tmpfs -o size=4m tmpfs tiny
  show refusalscope run --config moved.toml --out tiny/R
  listing tiny
  mount -t tmpfs -o size=18m tmpfs full
  show refusalscope run --config moved.toml --out full/R
  listing full/R
  sums() { (cd "$1" && sha256sum results.json attribution.safetensors generations.jsonl); }
  before=$(sums full/R)
  # another process fills the disk while the run recomputes its last stages
  (sleep 4; fallocate -l "$(($(df --output=avail -B1 full | tail -1) - 4096))" full/filler) &
  show refusalscope run --config moved.toml --out full/R --force sweep
  wait
  listing full/R
  [ "$(sums full/R)" = "$before" ] && echo "  previous set intact" || echo "  PREVIOUS SET CHANGED"
  umount tiny full
  ls -la R | awk 'NR>1 {print "  " $5, $9}'
  # a write that fails half-way through the set: a file-size limit below its largest file
  before=$(sums R)
  limit=$(($(find R -maxdepth 1 -type f -printf '%s\n' | sort -n | tail -1) / 1024 - 1))
  (ulimit -f "$limit" && show refusalscope run --config moved.toml --out R)
  listing R
  [ "$(sums R)" = "$before" ] && echo "  previous set intact" || echo "  PREVIOUS SET CHANGED"
else
  echo "(not root: tmpfs cases skipped)"
fi
dead=$(python -c "import os; pid=os.fork(); os._exit(0) if pid==0 else (os.waitpid(pid,0), print(pid))")
touch "R/.generations.jsonl.tmp-$dead" && mkdir "R/.run.tmp-$(hostname)-$dead-1"
listing R
show refusalscope run --config moved.toml --out R
listing R

title "5. prompt files and config types"
bad() { rm -rf bad && cp -r data bad; }
bad; sed -i '3s/,$//' bad/splits/harmful_train.json
config "$W/model2" "$W/saes2" "$W/bad" >bad.toml
show refusalscope run --config bad.toml --out Rb
bad; python - <<'EOF'
import json
rows = json.load(open("bad/splits/harmful_val.json"))
lines = [json.dumps(r) for r in rows[:4]] + ["", "", '{"instruction": "oops"'] + [json.dumps(r) for r in rows[4:]]
open("bad/splits/harmful_val.jsonl", "w").write("\n".join(lines) + "\n")
EOF
rm bad/splits/harmful_val.json
config "$W/model2" "$W/saes2" "$W/bad" >bad.toml
cat >>bad.toml <<EOF
[prompts.files]
harmful_val = "$W/bad/splits/harmful_val.jsonl"
EOF
show refusalscope run --config bad.toml --out Rb
bad; python -c "
p='bad/splits/harmless_test.json'; b=open(p,'rb').read().split(b'\n'); b[3]=b[3].replace(b'a', b'\xe9', 1); open(p,'wb').write(b'\n'.join(b))"
config "$W/model2" "$W/saes2" "$W/bad" >bad.toml
show refusalscope run --config bad.toml --out Rb
bad; python -c "
import json; p='bad/splits/harmful_test.json'; r=json.load(open(p))[:16]; r[5]['instruction']='how to '*150000; json.dump(r, open(p,'w'))"
ls -la bad/splits/harmful_test.json | awk '{print "  harmful_test.json:", $5, "bytes"}'
show refusalscope run --config bad.toml --out Rb
bad; python -c "
import json; p='bad/splits/harmful_train.json'; r=json.load(open(p)); json.dump([r[0]]*len(r), open(p,'w'))"
LINES_SHOWN=1 show refusalscope run --config bad.toml --out Rb
grep -m1 duplicates "$W/last.err" | cut -c1-300
config "$W/model2" "$W/saes2" "$W/data" "seed = 0" >k.toml
sed -i 's/^\[evaluation\]$/[evaluation]\nuse_sweep = false\nk_star = 61/' k.toml
show refusalscope run --config k.toml --out Rk
sed -i 's/^k_star = 61$/k_star = "5"/' k.toml
show refusalscope run --config k.toml --out Rk
sed -i 's/^k_star = "5"$/k_star = 5/; s/^max_new_tokens = 32$/max_new_tokens = "32"/' k.toml
show refusalscope run --config k.toml --out Rk

title "6. two runs of one new config at once; Ctrl-C and resume"
fresh=$(($(date +%s) % 100000))  # prompt seeds no earlier trial has cached
config "$W/model2" "$W/saes2" "$W/data" "seed = $fresh" >seed1.toml
refusalscope run --config seed1.toml --out C1 >c1.out 2>c1.err &
p1=$!
sleep 2
refusalscope run --config seed1.toml --out C2 >c2.out 2>c2.err &
p2=$!
wait $p1; echo "first rc=$?"; wait $p2; echo "second rc=$?"
cached C1/results.json; cached C2/results.json
tr '\r' '\n' <c2.err | grep -m3 "waiting for another" | cut -c1-200
config "$W/model2" "$W/saes2" "$W/data" "seed = $((fresh + 1))" >seed2.toml
set -m  # a job-controlled background job: it gets SIGINT like a foreground one would
refusalscope run --config seed2.toml --out S >s.out 2>s.err &
pid=$!
set +m
sleep 15 && kill -INT $pid
wait $pid; echo "rc=$?"
tr '\r' '\n' <s.err | grep -v '%|' | grep -v '^\s*$' | tail -n 1
[ -e S ] && listing S || echo "  S not created"
show refusalscope run --config seed2.toml --out S && cached S/results.json

title "7. concurrent writers of one cache key (hammer, 300 rounds)"
python - <<'EOF'
import multiprocessing, os, tempfile
from pathlib import Path
from refusalscope.runtime import cache as c, files

def write(final, barrier, tag):
    barrier.wait()
    with c.atomic_folder(Path(final)) as tmp:
        files.write_json(tmp / "result.json", {"writer": tag})
        (tmp / "big.bin").write_bytes(os.urandom(1 << 16))

def watch(final, stop, bad):
    while not stop.is_set():
        if c.is_complete(Path(final)) and not (Path(final) / "result.json").is_file():
            bad.set()

ctx, root = multiprocessing.get_context("fork"), Path(tempfile.mkdtemp())
crashed = torn = 0
for r in range(300):
    final, barrier, stop, bad = root / f"k{r}", ctx.Barrier(3), ctx.Event(), ctx.Event()
    writers = [ctx.Process(target=write, args=(str(final), barrier, t)) for t in "ab"]
    reader = ctx.Process(target=watch, args=(str(final), stop, bad))
    for p in [reader, *writers]:
        p.start()
    barrier.wait()
    for p in writers:
        p.join()
    stop.set(); reader.join()
    crashed += any(p.exitcode for p in writers); torn += bad.is_set()
print(f"  rounds 300: writer crashes {crashed}, reader saw complete-without-result {torn}, "
      f"leftover temps {len([p for p in root.iterdir() if p.name.startswith('.')])}")
EOF
