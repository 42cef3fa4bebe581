set terminal pngcairo size 1000,480 noenhanced
set output 'fc2_grad_L12.png'
set title 'grad norm of FFN W2, 12+12 layers'
set xlabel 'layer (encoder 0..11, decoder 12..23); solid: init, dashed: trained'
set ylabel 'grad norm of FFN W2'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 11.5, graph 0 to 11.5, graph 1 nohead dt 2
set logscale y
set format y '%.0e'
plot 'post_ln_L12.dat' using 1:3 with linespoints lc 1 dt 1 title 'post_ln init', 'post_ln_L12_step30.dat' using 1:3 with linespoints lc 1 dt 2 title 'post_ln step 30', 'pre_ln_L12.dat' using 1:3 with linespoints lc 2 dt 1 title 'pre_ln init', 'pre_ln_L12_step30.dat' using 1:3 with linespoints lc 2 dt 2 title 'pre_ln step 30'
