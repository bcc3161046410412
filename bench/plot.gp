# attn-bench: GFLOP/s against threads from `attn-bench --csv FILE`, one line per (shape, kernels[, kv dtype]),
# with the machine's measured FMA peak (peak_gflops) as open circles.
# usage: gnuplot -e "csv='bench.csv'; png='bench.png'" bench/plot.gp
# Needs gnuplot 5 (Debian: gnuplot-nox) and awk; uses pngcairo when this gnuplot has it, else png (libgd).

if (!exists("csv")) csv = 'bench.csv'
if (!exists("png")) png = 'bench.png'

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1200,800 font ",10"
} else {
    set terminal png size 1200,800
}
set output png
set datafile separator ','

# One key per (shape, kernels, kv_dtype), in the order the CSV has them (columns 1, 3, 5; kernels is the variant,
# e.g. avx512/zen5, so variants of one ISA get lines of their own).
keys = system("awk -F, 'NR > 1 && !seen[$1 FS $3 FS $5]++ { print $1 \"|\" $3 \"|\" $5 }' '" . csv . "'")
if (words(keys) == 0) { print "plot.gp: no data rows in ", csv; exit }

# "P1|avx512/zen5|f32" -> "P1 avx512/zen5"; a kv dtype other than f32 stays: "D1 avx512/zen5 f16".
bar(s) = strstrt(s, "|")
spaced(s) = bar(s) > 0 ? spaced(s[1:bar(s) - 1] . " " . s[bar(s) + 1:]) : s
title_of(k) = strlen(k) > 4 && k[strlen(k) - 3:] eq "|f32" ? spaced(k[1:strlen(k) - 4]) : spaced(k)
key_of_row(dummy) = strcol(1) . "|" . strcol(3) . "|" . strcol(5)

set title sprintf("attn-bench: %s", csv) noenhanced
set xlabel "threads"
set ylabel "GFLOP/s (median)"
set logscale y
set format y "%g"
set grid xtics ytics mytics
set key outside right top noenhanced
set offsets 0.25, 0.25, 0, 0
set xtics 1
set mxtics 1
set pointsize 1.2

plot for [i = 1:words(keys)] csv skip 1 \
         using (key_of_row(0) eq word(keys, i) ? $4 : NaN):8 \
         with linespoints lw 2 title title_of(word(keys, i)), \
     csv skip 1 using 4:9 with points pt 6 ps 2 lc rgb "black" title "FMA peak (peak_gflops)"
