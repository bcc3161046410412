#!/bin/sh
# Checks examples/attn-demo from the outside: its tables (every row sums to 1), the seeded embeddings, --causal,
# --vectors, --weights (safetensors files written here with printf, and by examples/make_demo_weights.py when
# python3 is installed), --dot (and `dot -Tsvg` accepting it), --png, and that bad input gives exit status 2 and a
# single line on stderr. POSIX sh; needs awk, od and dd. Graphviz's dot and python3 are optional: their checks are
# skipped, with a note, when they are missing.
#
#   sh tests/demo_test.sh DEMO [SCRATCH]
#
# DEMO is the attn-demo binary; the files go to a new directory under SCRATCH (default: $TMPDIR or /tmp), removed
# when every check passed. PYTHON names the interpreter (default python3). Prints "demo-test: PASS (N checks)" or
# each failure and "demo-test: FAIL (K of N checks)", exit status 0 or 1. JANSSON=no (the Makefile passes what
# configure found) says the library was built without jansson: --weights must then be refused, not work.

demo=${1:-}
[ -n "$demo" ] || { echo "usage: sh tests/demo_test.sh DEMO [SCRATCH]" >&2; exit 2; }
[ -x "$demo" ] || { echo "demo-test: $demo is not an executable" >&2; exit 2; }
case $demo in */*) ;; *) demo=./$demo ;; esac
here=$(cd "$(dirname "$0")" && pwd)
gen=$here/../examples/make_demo_weights.py
: "${PYTHON:=python3}"
jansson=${JANSSON:-yes}

scratch=${2:-${TMPDIR:-/tmp}}
mkdir -p "$scratch" || exit 2
t=$(mktemp -d "$scratch/demo-test.XXXXXX") || exit 2

checks=0
failed=0
fail() {
    failed=$((failed + 1))
    echo "demo-test: FAIL: $*" >&2
}
skip() { fail "$* (a check that cannot run is a failure)"; }

# run NAME ARGS...: runs the demo, keeps stdout in $t/NAME.out, stderr in $t/NAME.err, the status in $rc.
run() {
    name=$1
    shift
    "$demo" "$@" > "$t/$name.out" 2> "$t/$name.err"
    rc=$?
}

# ok NAME ARGS...: the run must succeed with nothing on stderr.
ok() {
    checks=$((checks + 1))
    run "$@"
    if [ "$rc" -ne 0 ] || [ -s "$t/$1.err" ]; then
        fail "$1: exit status $rc (want 0), stderr: $(head -n 3 "$t/$1.err")"
        return 1
    fi
}

# bad NAME ARGS...: the run must exit with status 2 and one line on stderr, "attn-demo: ...".
bad() {
    checks=$((checks + 1))
    run "$@"
    lines=$(wc -l < "$t/$1.err" | tr -d ' ')
    if [ "$rc" -ne 2 ] || [ "$lines" != 1 ] || ! grep -q '^attn-demo: ' "$t/$1.err"; then
        fail "$1: exit status $rc (want 2), $lines lines on stderr (want 1 'attn-demo: ...'): $(head -n 3 "$t/$1.err")"
    fi
}

# has NAME TEXT: the run's stdout contains TEXT (a fixed string).
has() {
    checks=$((checks + 1))
    grep -qF -- "$2" "$t/$1.out" || fail "$1: no '$2' in the output"
}

# rows NAME TABLES ROWS: the output holds TABLES square tables with ROWS rows in all; each row's printed sum is
# within 1e-3 of 1, and so are its printed weights (give or take their rounding to 3 decimals); "-" (masked) is 0.
rows() {
    checks=$((checks + 1))
    why=$(awk -v want_tables="$2" -v want_rows="$3" '
        function bad(msg) { print msg; done = 1; exit }
        /^head [0-9]+$/ { tables++ }
        $1 ~ /^[0-9]+$/ && $(NF - 1) == "|" {
            rows++
            s = 0
            for (k = 3; k <= NF - 2; k++) s += $k
            n = NF - 4
            if ($1 != 0 && n != cols) bad("row " $1 " has " n " columns, the row before " cols)
            cols = n
            if ($NF - 1 > 1e-3 || 1 - $NF > 1e-3) bad("row " $1 " (" $2 ") sums to " $NF)
            tol = 1e-3 + n * 5e-4
            if (s - 1 > tol || 1 - s > tol) bad("the weights of row " $1 " (" $2 ") add up to " s)
        }
        END {
            if (!done && (tables != want_tables || rows != want_rows))
                print tables + 0 " tables with " rows + 0 " rows, want " want_tables " with " want_rows
        }' "$t/$1.out")
    [ -z "$why" ] || fail "$1: $why"
}

# says NAME TEXT: the run's stderr mentions TEXT (any case).
says() {
    checks=$((checks + 1))
    grep -qiF -- "$2" "$t/$1.err" || fail "$1: stderr does not mention '$2': $(head -n 2 "$t/$1.err")"
}

# st FILE HEADER NBYTES: a safetensors file: the 8-byte little-endian length of HEADER (ASCII JSON), HEADER, and
# NBYTES zero bytes of data.
le64() {
    n=$1
    i=0
    while [ "$i" -lt 8 ]; do
        # shellcheck disable=SC2059 # the format is the octal escape of one byte
        printf "\\$(printf '%03o' $((n % 256)))"
        n=$((n / 256))
        i=$((i + 1))
    done
}
st() {
    { le64 ${#2}; printf '%s' "$2"; dd if=/dev/zero bs=1 count="$3" 2> /dev/null; } > "$1"
}
tensor() { printf '"%s":{"dtype":"F32","shape":[%s],"data_offsets":[%s]}' "$1" "$2" "$3"; }
meta='"__metadata__":{"vocab":"i\nlove\ntennis\n<unk>","n_heads":"2"}'

has_dot=no
command -v dot > /dev/null 2>&1 && has_dot=yes

# ---- the default run: seeded embeddings and layer -------------------------------------------------------------------
if ok default "I love tennis"; then
    has default "[I] [love] [tennis]"
    has default "love -> "
    rows default 2 6
fi
ok default2 "I love tennis" && { checks=$((checks + 1)); cmp -s "$t/default.out" "$t/default2.out" ||
    fail "two runs of the same sentence print different output"; }
# The same word (in any case) gets the same vector: its two columns are equal in every row.
if ok same_word --heads 1 "Cat dog cat"; then
    rows same_word 1 3
    checks=$((checks + 1))
    awk '$1 ~ /^[0-9]+$/ && $(NF - 1) == "|" && $3 != $5 { bad = 1 } END { exit bad }' "$t/same_word.out" ||
        fail "same_word: 'Cat' and 'cat' got different weights"
fi
if ok words --d-model 8 --heads 4 --kv-heads 2 --seed 7 --top 2 "Don't panic, it's 42!"; then
    has words "[Don't] [panic] [,] [it's] [42] [!]"
    rows words 4 24
fi
if ok causal --causal "the cat sat"; then
    rows causal 2 6
    checks=$((checks + 1))
    awk '$1 ~ /^[0-9]+$/ && $(NF - 1) == "|" {
             for (j = 0; j < NF - 4; j++) if ((j > $1) != ($(3 + j) == "-")) bad = 1
         } END { exit bad }' "$t/causal.out" || fail "causal: the masked entries are not exactly those above the diagonal"
fi
ok one_head --head 1 "I love tennis" && rows one_head 1 3
ok help --help && has help "--min-weight"
max=$(awk 'BEGIN { for (i = 0; i < 512; i++) printf "w%d ", i % 7 }')
ok max_tokens --head 0 --top 0 "$max"

# ---- --dot and --png -----------------------------------------------------------------------------------------------
if ok dot --dot "$t/g.dot" "I love tennis"; then
    checks=$((checks + 1))
    if ! head -n 1 "$t/g.dot" 2> /dev/null | grep -q '^digraph' || ! grep -q -- '->' "$t/g.dot" ||
       [ "$(grep -c 'subgraph cluster_h' "$t/g.dot")" != 2 ]; then
        fail "dot: $t/g.dot does not start with 'digraph' or lacks edges or the two head clusters"
    elif [ "$has_dot" = yes ]; then
        if ! dot -Tsvg "$t/g.dot" > "$t/g.svg" 2> "$t/g.svg.err" || [ -s "$t/g.svg.err" ]; then
            fail "dot: dot -Tsvg rejects $t/g.dot: $(head -n 3 "$t/g.svg.err")"
        fi
    fi
fi
if ok dot_one --dot "$t/h1.dot" --head 1 --min-weight 1 "I love tennis"; then
    checks=$((checks + 1))
    if [ "$(grep -c 'subgraph cluster_h' "$t/h1.dot" 2> /dev/null)" != 1 ] || ! grep -q cluster_h1 "$t/h1.dot" ||
       grep -q 'label="0\.' "$t/h1.dot"; then
        fail "dot_one: --head 1 --min-weight 1 should draw head 1 without edges"
    fi
fi
if [ "$has_dot" = yes ]; then
    if ok png --png "$t/g.png" "I love tennis"; then
        checks=$((checks + 1))
        sig=$(od -An -tx1 -N8 "$t/g.png" 2> /dev/null | tr -d ' \n')
        [ "$sig" = 89504e470d0a1a0a ] || fail "png: $t/g.png does not start with the PNG signature ($sig)"
    fi
else
    skip "--png rendering: Graphviz's dot is not installed (apt-get install graphviz)"
fi
# Without dot on PATH: the tables still print, then one line on stderr and exit status 1.
mkdir -p "$t/empty"
checks=$((checks + 1))
PATH=$t/empty "$demo" --png "$t/none.png" "I love tennis" > "$t/nodot.out" 2> "$t/nodot.err"
rc=$?
if [ "$rc" -ne 1 ] || [ "$(wc -l < "$t/nodot.err" | tr -d ' ')" != 1 ] || ! grep -q graphviz "$t/nodot.err"; then
    fail "nodot: exit status $rc (want 1) and one line naming graphviz on stderr: $(head -n 3 "$t/nodot.err")"
else
    rows nodot 2 6
fi

# ---- --vectors -----------------------------------------------------------------------------------------------------
printf 'i 1 0 0 0\nlove 0 1 0 0\n\ntennis  0 0 1 0.5\n<unk> 0.1 0.1 0.1 0.1\n' > "$t/v.txt"
if ok vectors --vectors "$t/v.txt" "I love TENNIS, really"; then
    has vectors "d_model 4"
    has vectors "embedded as <unk>: , really"
    rows vectors 2 10
fi
printf 'i 1 0 0 0\nlove 0 1 0\n' > "$t/ragged.txt"
bad vectors_ragged --vectors "$t/ragged.txt" "I love"
printf 'i 1 0 0 0\nlove 0 1 x 0\n' > "$t/nan.txt"
bad vectors_number --vectors "$t/nan.txt" "I love"
printf 'i 1 0 0 0\nlove 0 1 0 0\n' > "$t/nounk.txt"
bad vectors_unknown --vectors "$t/nounk.txt" "I love tennis"
bad vectors_width --vectors "$t/v.txt" --d-model 8 "I love"
bad vectors_missing --vectors "$t/does-not-exist.txt" "I love"

# ---- --weights -----------------------------------------------------------------------------------------------------
st "$t/zero.st" "{$meta,$(tensor embed 4,4 0,64),$(tensor in_proj_weight 12,4 64,256),$(tensor out_proj.weight 4,4 256,320)}" 320
if [ "$jansson" = no ]; then
    # Built without jansson the loader refuses every file: one line on stderr that says so, exit status 2.
    bad weights_nojansson --weights "$t/zero.st" "I love tennis"
    says weights_nojansson "without jansson"
    echo "demo-test: note: built without jansson (JANSSON=no): --weights checked only for its refusal"
else
    # Files written by printf (all weights 0, so every row is uniform).
    if ok weights_zero --weights "$t/zero.st" "I love tennis"; then
        rows weights_zero 2 6
        checks=$((checks + 1))
        awk '$1 ~ /^[0-9]+$/ && $(NF - 1) == "|" { for (k = 3; k <= NF - 2; k++) if ($k != "0.333") bad = 1 }
             END { exit bad }' "$t/weights_zero.out" || fail "weights_zero: zero weights should give 0.333 everywhere"
    fi
    bad weights_heads --weights "$t/zero.st" --heads 1 "I love tennis"
    st "$t/no_out.st" "{$meta,$(tensor embed 4,4 0,64),$(tensor in_proj_weight 12,4 64,256)}" 256
    bad weights_missing --weights "$t/no_out.st" "I love tennis"
    says weights_missing out_proj.weight
    st "$t/shape.st" "{$meta,$(tensor embed 4,4 0,64),$(tensor in_proj_weight 15,5 64,364),$(tensor out_proj.weight 5,5 364,464)}" 464
    bad weights_shape --weights "$t/shape.st" "I love tennis"
    st "$t/rows.st" "{$meta,$(tensor embed 3,4 0,48),$(tensor in_proj_weight 12,4 48,240),$(tensor out_proj.weight 4,4 240,304)}" 304
    bad weights_vocab --weights "$t/rows.st" "I love tennis"
    printf 'this is not a safetensors file\n' > "$t/text.st"
    bad weights_text --weights "$t/text.st" "I love tennis"
    bad weights_nofile --weights "$t/does-not-exist.st" "I love tennis"

    # Files written by examples/make_demo_weights.py.
    if command -v "$PYTHON" > /dev/null 2>&1; then
        for dtype in F32 BF16; do
            checks=$((checks + 1))
            if ! "$PYTHON" "$gen" -o "$t/demo-$dtype.st" --dtype "$dtype" > "$t/gen-$dtype.log" 2>&1; then
                fail "make_demo_weights.py --dtype $dtype: $(tail -n 3 "$t/gen-$dtype.log")"
                continue
            fi
            if ok "demo_$dtype" --weights "$t/demo-$dtype.st" "I love tennis"; then
                rows "demo_$dtype" 2 6
                has "demo_$dtype" "I -> love"
                has "demo_$dtype" "love -> tennis"
                has "demo_$dtype" "love -> I"
            fi
        done
        checks=$((checks + 1))
        if "$PYTHON" "$gen" -o "$t/demo-nobias.st" --no-bias --d-model 24 --heads 3 > "$t/gen-nobias.log" 2>&1; then
            ok demo_nobias --weights "$t/demo-nobias.st" --causal "She reads the book, xyzzy!" &&
                rows demo_nobias 3 21 && has demo_nobias "embedded as <unk>: xyzzy" && has demo_nobias "biases: none), causal mask"
        else
            fail "make_demo_weights.py --no-bias: $(tail -n 3 "$t/gen-nobias.log")"
        fi
    else
        skip "examples/make_demo_weights.py: $PYTHON is not installed (apt-get install python3-minimal)"
    fi
fi

# ---- bad flags and input -------------------------------------------------------------------------------------------
bad no_sentence
bad flags_only --causal
bad empty ""
bad spaces "   "
bad unknown_flag --bogus "I love tennis"
bad heads_word --heads x "I love tennis"
bad heads_zero --heads 0 "I love tennis"
bad heads_missing "I love tennis" --heads
bad heads_divide --heads 3 "I love tennis"
bad kv_divide --heads 4 --kv-heads 3 "I love tennis"
bad head_range --head 2 "I love tennis"
bad d_model_suffix --d-model 16x "I love tennis"
bad seed_negative --seed -1 "I love tennis"
bad top_negative --top -1 "I love tennis"
bad min_weight --min-weight 2 "I love tennis"
bad both_files --weights "$t/zero.st" --vectors "$t/v.txt" "I love tennis"
bad too_many "$max w"
bad control "$(printf 'I love\001tennis')"
bad utf8 "$(printf 'I love \377')"

if [ "$failed" -eq 0 ]; then
    rm -rf "$t"
    echo "demo-test: PASS ($checks checks)"
    exit 0
fi
echo "demo-test: FAIL ($failed of $checks checks; files kept in $t)" >&2
exit 1
