set terminal pngcairo size 1000,480 noenhanced
set output 'docs/analysis_report_rezero_admin_files/min_norms_L6.png'
set title 'min norms after residual adds (ResiDual: x_d add), 6+6 layers'
set xlabel 'layer (encoder 0..5, decoder 6..11)'
set ylabel 'min norms after residual adds (ResiDual: x_d add)'
set key outside right
set grid
set datafile missing 'NaN'
set arrow from 5.5, graph 0 to 5.5, graph 1 nohead dt 2
plot 'docs/analysis_report_rezero_admin_files/post_ln_L6.dat' using 1:9 with linespoints lc 1 dt 1 title 'post_ln', 'docs/analysis_report_rezero_admin_files/pre_ln_L6.dat' using 1:9 with linespoints lc 2 dt 1 title 'pre_ln', 'docs/analysis_report_rezero_admin_files/res_post_norm_L6.dat' using 1:9 with linespoints lc 3 dt 1 title 'res_post_norm', 'docs/analysis_report_rezero_admin_files/rezero_L6.dat' using 1:9 with linespoints lc 4 dt 1 title 'rezero', 'docs/analysis_report_rezero_admin_files/admin_L6.dat' using 1:9 with linespoints lc 5 dt 1 title 'admin'
