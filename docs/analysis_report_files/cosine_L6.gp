set terminal pngcairo size 900,450 noenhanced
set output 'docs/analysis_report_files/cosine_L6.png'
set title 'cos(x_{i-1}, x_i) vs layer, 6+6 layers (encoder 0..5, decoder 6..11)'
set xlabel 'layer'
set ylabel 'cos(x_{i-1}, x_i)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 5.5, graph 0 to 5.5, graph 1 nohead dt 2
plot 'docs/analysis_report_files/post_ln_L6.dat' using 1:5 with linespoints title 'post_ln', 'docs/analysis_report_files/pre_ln_L6.dat' using 1:5 with linespoints title 'pre_ln', 'docs/analysis_report_files/resi_dual_L6.dat' using 1:5 with linespoints title 'resi_dual', 'docs/analysis_report_files/hybrid_norm_L6.dat' using 1:5 with linespoints title 'hybrid_norm', 'docs/analysis_report_files/deep_norm_L6.dat' using 1:5 with linespoints title 'deep_norm'
