set terminal pngcairo size 1000,480 noenhanced
set output 'self_logit_L6.png'
set title 'largest self-attention logit |q.k|/sqrt(d_h), 6+6 layers'
set xlabel 'layer (encoder 0..5, decoder 6..11); solid: init, dashed: trained'
set ylabel 'largest self-attention logit |q.k|/sqrt(d_h)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 5.5, graph 0 to 5.5, graph 1 nohead dt 2
set logscale y
set format y '%.0e'
plot 'post_ln_L6.dat' using 1:11 with linespoints lc 1 dt 1 title 'post_ln init', 'post_ln_L6_step30.dat' using 1:11 with linespoints lc 1 dt 2 title 'post_ln step 30', 'pre_ln_L6.dat' using 1:11 with linespoints lc 2 dt 1 title 'pre_ln init', 'pre_ln_L6_step30.dat' using 1:11 with linespoints lc 2 dt 2 title 'pre_ln step 30'
