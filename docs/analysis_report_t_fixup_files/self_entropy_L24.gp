set terminal pngcairo size 1000,480 noenhanced
set output 'self_entropy_L24.png'
set title 'mean entropy of the self-attention (nats), 24+24 layers'
set xlabel 'layer (encoder 0..23, decoder 24..47); solid: init, dashed: trained'
set ylabel 'mean entropy of the self-attention (nats)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 23.5, graph 0 to 23.5, graph 1 nohead dt 2
plot 'post_ln_L24.dat' using 1:16 with linespoints lc 1 dt 1 title 'post_ln init', 'post_ln_L24_step30.dat' using 1:16 with linespoints lc 1 dt 2 title 'post_ln step 30', 'rezero_L24.dat' using 1:16 with linespoints lc 2 dt 1 title 'rezero init', 'rezero_L24_step30.dat' using 1:16 with linespoints lc 2 dt 2 title 'rezero step 30', 't_fixup_L24.dat' using 1:16 with linespoints lc 3 dt 1 title 't_fixup init', 't_fixup_L24_step30.dat' using 1:16 with linespoints lc 3 dt 2 title 't_fixup step 30'
