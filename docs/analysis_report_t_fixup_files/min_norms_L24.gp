set terminal pngcairo size 1000,480 noenhanced
set output 'min_norms_L24.png'
set title 'min norms after residual adds (ResiDual: x_d add), 24+24 layers'
set xlabel 'layer (encoder 0..23, decoder 24..47)'
set ylabel 'min norms after residual adds (ResiDual: x_d add)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 23.5, graph 0 to 23.5, graph 1 nohead dt 2
plot 'post_ln_L24.dat' using 1:9 with linespoints lc 1 dt 1 title 'post_ln', 'rezero_L24.dat' using 1:9 with linespoints lc 2 dt 1 title 'rezero', 't_fixup_L24.dat' using 1:9 with linespoints lc 3 dt 1 title 't_fixup'
