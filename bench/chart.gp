# The chart of W3 and W4 (bench/chart.svg): throughput of CPU-heavy reads against the readers of
# the pool, and how late a 1 ms ticker wakes beside them, async (pasyn) against sync (LuaDBI).
# bench/suite.lua writes the data (gnuplot variables and two data blocks) and runs:
#   gnuplot -e "data = 'build/bench-chart.dat'; out = 'build/bench-chart.svg'" bench/chart.gp
load data
set terminal svg size 1000,460 dynamic noenhanced font "Helvetica,13" background "white"
set output out
set multiplot layout 1,2 title title
set grid ytics lc "gray90"
set border 3
set tics nomirror

set title sprintf("W3: %d CPU-heavy reads at once (a GROUP BY)", queries)
set xlabel "pasyn readers"
set ylabel "queries/s (higher is better)"
set xrange [0.7:3.3]
set xtics 1
stats $w3 using 4 nooutput
top = STATS_max
top = dbi > top ? dbi : top # a reference that did not run is NaN, never the larger
top = raw > top ? raw : top
top = raw2 > top ? raw2 : top
set yrange [0:1.15 * top]
set key bottom right
plot $w3 using 1:2:3:4 with yerrorlines lw 2 pt 7 lc "#1f5fa8" title "pasyn (median, min-max)", \
     raw2 with lines dt 3 lw 2 lc "#777777" title "raw C, 2 processes", \
     raw with lines dt 2 lw 2 lc "#444444" title "raw C, 1 thread", \
     dbi with lines lw 2 lc "#c0392b" title "LuaDBI, sequential"

set title "W4: a 1 ms ticker beside W3, async vs sync"
unset xlabel
set xtics font ",11"
set bmargin 4
set ylabel "lateness, ms, log scale (lower is better)"
set logscale y
set yrange [0.01:*]
set xrange [-0.6:4.6]
set style fill solid 0.85 noborder
set boxwidth 0.6
set key top left
colour(group) = group == 0 ? 0x999999 : group == 1 ? 0x1f5fa8 : 0xc0392b
plot $w4 using 0:2:(colour($3)):xtic(1) with boxes lc rgb variable notitle, \
     $w4 using 0:2:(sprintf("%.3g", $2)) with labels offset 0,0.7 notitle, \
     1 with lines dt 2 lc "#1f5fa8" title "p99 target, 1 ms", \
     5 with lines dt 3 lc "#1f5fa8" title "max target, 5 ms"
unset multiplot
