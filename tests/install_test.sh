#!/bin/sh
# make check-install: installs the library into a temporary DESTDIR (PREFIX=/usr/local), then builds
# examples/embed.c against that copy with nothing but what pkg-config says about it, runs it and checks its output,
# then uninstalls and removes the temporary tree. POSIX sh; the Makefile passes, in the environment:
#   srcdir    the source tree (relative to the build directory, or absolute)
#   builddir  the build directory (where make install runs)
#   MAKE      the make to run install with
#   CC, CFLAGS, LDFLAGS   the compiler and flags of the build (CFLAGS includes the sanitizer flags, if any)
#   CROSS, EMU            a cross build (CROSS=yes, or an emulator in EMU) is skipped
# Prints one "check-install: PASS", "check-install: FAIL: ..." or "check-install: SKIP: ..." line at the end.

say() { printf 'check-install: %s\n' "$*"; }

tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
trap 'cleanup; exit 1' HUP INT TERM

fail() {
    say "FAIL: $*" >&2
    exit 1
}

# Shows a log that explains a failure (to stderr, indented), then fails.
fail_log() {
    log=$1
    shift
    [ -f "$log" ] && sed 's/^/    /' "$log" >&2
    fail "$@"
}

[ -n "${srcdir:-}" ] || fail "srcdir is not set (run it as: make check-install)"
[ -n "${builddir:-}" ] || fail "builddir is not set (run it as: make check-install)"
: "${MAKE:=make}" "${CC:=cc}" "${CFLAGS:=}" "${LDFLAGS:=}"

if [ "${CROSS:-no}" = yes ] || [ -n "${EMU:-}" ]; then
    say "SKIP: cross build (${EMU:-no emulator}): the installed library is for another machine"
    exit 0
fi

embed_c=$srcdir/examples/embed.c
[ -f "$embed_c" ] || fail "no $embed_c"
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config not found: apt-get install pkg-config"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/attn-install.XXXXXX") || fail "mktemp -d failed"
case "$tmp" in
    *[!A-Za-z0-9/._-]*) fail "temporary directory '$tmp' has characters pkg-config output cannot carry (set TMPDIR)" ;;
esac
root=$tmp/root
mkdir "$root" || fail "cannot create $root"

# 1. install into the temporary root
say "$MAKE install DESTDIR=$root PREFIX=/usr/local"
$MAKE -C "$builddir" install DESTDIR="$root" PREFIX=/usr/local > "$tmp/install.log" 2>&1 ||
    fail_log "$tmp/install.log" "make install failed"
for f in lib/libattn.a include/attn.h lib/pkgconfig/attn.pc; do
    [ -f "$root/usr/local/$f" ] || fail_log "$tmp/install.log" "make install did not install /usr/local/$f"
done
grep -q '^prefix=/usr/local$' "$root/usr/local/lib/pkgconfig/attn.pc" ||
    fail_log "$root/usr/local/lib/pkgconfig/attn.pc" "the installed attn.pc does not say prefix=/usr/local"

# 2. what pkg-config says about the installed copy: it must point into the temporary root, nowhere else
pc() {
    PKG_CONFIG_PATH=$root/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root pkg-config "$@"
}
pc --exists --print-errors attn 2> "$tmp/pc.log" || fail_log "$tmp/pc.log" "pkg-config cannot read the installed attn.pc"
flags=$(pc --static --cflags --libs attn 2> "$tmp/pc.log") || fail_log "$tmp/pc.log" "pkg-config --static --cflags --libs attn failed"
say "pkg-config --static --cflags --libs attn: $flags"
case " $flags " in *" -I$root/usr/local/include "*) ;; *) fail "pkg-config --cflags lacks -I$root/usr/local/include" ;; esac
case " $flags " in *" -L$root/usr/local/lib "*) ;; *) fail "pkg-config --libs lacks -L$root/usr/local/lib" ;; esac
case " $flags " in *" -lattn "*) ;; *) fail "pkg-config --libs lacks -lattn" ;; esac
version=$(pc --modversion attn 2> "$tmp/pc.log") || fail_log "$tmp/pc.log" "pkg-config --modversion attn failed"
header_version=$(sed -n 's/^#define ATTN_VERSION_[A-Z]*  *\([0-9][0-9]*\).*/\1/p' "$root/usr/local/include/attn.h" |
                 tr '\n' '.' | sed 's/\.$//')
[ "$version" = "$header_version" ] ||
    fail "attn.pc says version '$version', the installed attn.h '$header_version'"

# 3. build examples/embed.c against the installed copy only (no -I into the source tree, no build directory)
# shellcheck disable=SC2086 # CFLAGS, LDFLAGS and flags are lists of words
$CC -std=c11 -Wall -Wextra -Werror $CFLAGS -o "$tmp/embed" "$embed_c" $flags $LDFLAGS > "$tmp/cc.log" 2>&1 ||
    fail_log "$tmp/cc.log" "examples/embed.c does not build with pkg-config's flags: $CC ... $flags"
say "built examples/embed.c with $CC and pkg-config's flags only"

# 4. run it: causal attention over 3 tokens; the weights and outputs are known in closed form
"$tmp/embed" > "$tmp/embed.out" 2> "$tmp/embed.err" || {
    cat "$tmp/embed.out" "$tmp/embed.err" > "$tmp/embed.log"
    fail_log "$tmp/embed.log" "the installed-library build of examples/embed.c exits with an error"
}
cat > "$tmp/expected" <<'EOF'
I       attends: I 1.000  love 0.000  tennis 0.000  -> out [1.000 0.000 0.000 0.000]
love    attends: I 0.500  love 0.500  tennis 0.000  -> out [0.500 0.500 0.000 0.000]
tennis  attends: I 0.274  love 0.274  tennis 0.452  -> out [0.274 0.274 0.452 0.000]
EOF
head -n 1 "$tmp/embed.out" | grep -Eq '^isa (scalar|avx2|avx512|avx512bf16|amx|neon|neonbf16), [1-9][0-9]* threads?$' ||
    fail_log "$tmp/embed.out" "examples/embed's first line is not 'isa NAME, N threads'"
sed 1d "$tmp/embed.out" > "$tmp/embed.rows"
cmp -s "$tmp/expected" "$tmp/embed.rows" || {
    { echo "expected:"; cat "$tmp/expected"; echo "got:"; cat "$tmp/embed.out"; } > "$tmp/diff.log"
    fail_log "$tmp/diff.log" "examples/embed printed the wrong attention weights or outputs"
}
say "examples/embed: $(head -n 1 "$tmp/embed.out"), weights and outputs as expected"

# 5. uninstall leaves none of the three files
$MAKE -C "$builddir" uninstall DESTDIR="$root" PREFIX=/usr/local > "$tmp/uninstall.log" 2>&1 ||
    fail_log "$tmp/uninstall.log" "make uninstall failed"
for f in lib/libattn.a include/attn.h lib/pkgconfig/attn.pc; do
    [ ! -e "$root/usr/local/$f" ] || fail "make uninstall left /usr/local/$f"
done

say "PASS (installed $version to a DESTDIR, built and ran examples/embed.c with pkg-config --static)"
exit 0
