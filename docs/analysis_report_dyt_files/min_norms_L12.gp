set terminal pngcairo size 1000,480 noenhanced
set output 'min_norms_L12.png'
set title 'min norms after residual adds (ResiDual: x_d add), 12+12 layers'
set xlabel 'layer (encoder 0..11, decoder 12..23)'
set ylabel 'min norms after residual adds (ResiDual: x_d add)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 11.5, graph 0 to 11.5, graph 1 nohead dt 2
plot 'post_ln_L12.dat' using 1:9 with linespoints lc 1 dt 1 title 'post_ln', 'pre_ln_L12.dat' using 1:9 with linespoints lc 2 dt 1 title 'pre_ln'
