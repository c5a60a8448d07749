"""Analysis helpers behind the notebooks in analysis/: spectra on an energy axis with emission lines, peak
areas, the table of all experiments and their curves, saliency of fine-tuned models, and the latent space of
pretrained encoders (and the sparse code of a VSC pretraining). Every plotting helper writes a PNG atomically
and returns its path."""

from coremax.analysis.experiments import gather_experiments, load_histories, plot_metric_vs, training_curves
from coremax.analysis.latent import (active_fraction, code_channel_correlation, dimension_elements, embeddings,
                                     linear_probe, pca, plot_code_activity, plot_code_channels, plot_embeddings,
                                     pretraining_scores, sparse_codes)
from coremax.analysis.overview import plot_downcore, plot_target_histograms
from coremax.analysis.saliency import (attention_relevance, plot_run_saliency, plot_saliency, reference_baseline,
                                       saliency)
from coremax.analysis.spectra import (MAIN_ELEMENTS, emission_lines, energy_axis, label_lines, peak_areas,
                                      plot_spectra, run_kvs, run_spectra, run_suffix, window_energy)

__all__ = ["active_fraction", "attention_relevance", "code_channel_correlation", "dimension_elements", "MAIN_ELEMENTS",
           "emission_lines", "embeddings", "energy_axis", "gather_experiments", "label_lines", "linear_probe",
           "load_histories", "pca", "peak_areas", "plot_code_activity", "plot_code_channels", "plot_downcore",
           "plot_embeddings", "plot_metric_vs", "plot_run_saliency", "plot_saliency", "pretraining_scores",
           "plot_spectra", "plot_target_histograms",
           "reference_baseline", "run_kvs", "run_spectra", "run_suffix", "saliency", "sparse_codes",
           "training_curves", "window_energy"]
