#!/usr/bin/env bash
# scripts/plot-latency.sh TIMELINE.csv OUT.(png|svg) [CLASS ...]
#
# Latency over time per class, from gpuwarden-load's --timeline file
# (intended_s,class,outcome,status,ttft_ms,total_ms,sent; one line per
# request).
# Two panels sharing the time axis (seconds from the run's start, at each
# request's intended send time): time to first token of the answered (200)
# requests, and total latency of every request that got a whole response,
# refusals included, each on a log scale. One colour per class; CLASS
# arguments keep only those classes (default: every class in the file).
#
# Needs gnuplot (Debian: gnuplot-nox). It is optional: scripts/test.sh does
# not run this and install-deps.sh does not install it.
#   apt-get install gnuplot-nox
# Exit: 0 written, 100 misuse, 111 gnuplot missing or failed.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 TIMELINE.csv OUT.png|OUT.svg [CLASS ...]" >&2
    exit 100
fi
in=$1 out=$2
shift 2
[ -r "$in" ] || { echo "plot-latency: $in: cannot read" >&2; exit 100; }
head -n 1 "$in" | grep -qx 'intended_s,class,outcome,status,ttft_ms,total_ms,sent' ||
    { echo "plot-latency: $in: not a gpuwarden-load --timeline file (header differs)" >&2; exit 100; }
case $out in
*.png) term="pngcairo size 1200,800 font 'sans,10'" ;;
*.svg) term="svg size 1200,800 dynamic font 'sans,10'" ;;
*) echo "plot-latency: $out: expected a .png or .svg name" >&2; exit 100 ;;
esac
command -v gnuplot >/dev/null ||
    { echo "plot-latency: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 111; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ $# -gt 0 ]; then
    classes=("$@")
else
    mapfile -t classes < <(tail -n +2 "$in" | cut -d, -f2 | awk '!seen[$0]++')
fi
[ ${#classes[@]} -gt 0 ] || { echo "plot-latency: $in: no requests" >&2; exit 100; }

# One data file per class: time, ttft (or NaN), total (or NaN when the
# request got no whole response: connection errors, timeouts, never sent,
# unfinished).
# 16 colours that stay apart (gnuplot's own cycle repeats after 8)
colours=('#9400d3' '#009e73' '#56b4e9' '#e69f00' '#0072b2' '#d55e00' '#000000' '#cc79a7'
    '#f0e442' '#8b4513' '#7f7f7f' '#ff1493' '#2e8b57' '#1e90ff' '#b8860b' '#dc143c')
ttft_plot="" total_plot="" i=0
for c in "${classes[@]}"; do
    i=$((i + 1))
    f="$tmp/$i.dat"
    awk -F, -v c="$c" 'NR > 1 && $2 == c {
        ttft = ($5 == "" ? "NaN" : $5)
        total = ($3 == "conn_error" || $3 == "timeout" || $3 == "not_sent" || $3 == "unfinished") ? "NaN" : $6
        print $1, ttft, total
    }' "$in" >"$f"
    if [ ! -s "$f" ]; then
        echo "plot-latency: class $c: no requests in $in" >&2
        exit 100
    fi
    title=${c//_/\\_}
    lc="lc rgb '${colours[$(((i - 1) % 16))]}'"
    ttft_plot+="${ttft_plot:+, }'$f' using 1:2 with points pt 7 ps 0.4 $lc title '$title'"
    total_plot+="${total_plot:+, }'$f' using 1:3 with points pt 7 ps 0.4 $lc title '$title'"
done

# (a class with no answered request has nothing in the TTFT panel: gnuplot
# warns "Skipping data file with no valid points"; that is expected)
gnuplot 2>"$tmp/gnuplot.err" <<EOF || { cat "$tmp/gnuplot.err" >&2; echo "plot-latency: gnuplot failed" >&2; exit 111; }
set terminal $term
set output '$out'
set datafile missing 'NaN'
set multiplot layout 2,1 title "latency over time per class ($(basename "$in"))"
set logscale y
set grid
set key outside right top
set ylabel 'time to first token (ms)'
set format x ''
plot $ttft_plot
set ylabel 'total latency (ms)'
set xlabel 'intended send time (s from the start of the run)'
set format x '%g'
plot $total_plot
unset multiplot
EOF
grep -v -e 'Skipping data file with no valid points' -e '^ *$' "$tmp/gnuplot.err" >&2 || true
echo "plot-latency: wrote $out (${#classes[@]} classes)"
