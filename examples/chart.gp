# The demo chart: decisions, rejects by reason, and service lookups, from the
# data files scripts/demo.sh exports from the views. gnuplot -e "dir='...'"
set terminal pngcairo size 1400,900 font "DejaVu Sans,11" noenhanced
set output dir.'/iclear-demo.png'
set multiplot layout 2,2 title "iclear demo: ".system("cat ".dir."/leads.count")." leads through the attached table" font ",14"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set key off
set datafile separator "\t"
set yrange [0:*]

set title "Decisions"
plot dir.'/decisions.tsv' using 2:xtic(1) linecolor rgb "#4477aa"

set title "Rejects by rejecting rule, list or service"
set xtics rotate by -35 font ",9"
plot dir.'/rejects.tsv' using 2:xtic(1) linecolor rgb "#cc6677"

set title "Matched rules (full_log)"
plot dir.'/rules.tsv' using 2:xtic(1) linecolor rgb "#228833"

set title "Third-party lookups by service (service_usage)"
set xtics norotate font ",11"
if (system("wc -l < ".dir."/services.tsv") + 0 == 0) {
    unset xtics; unset ytics; unset grid; unset border
    set label 1 "no third-party lookups in this batch" at graph 0.5, 0.5 center font ",12"
    plot [0:1][0:1] 2 notitle
} else {
    plot dir.'/services.tsv' using 2:xtic(1) linecolor rgb "#ddaa33"
}
unset multiplot
