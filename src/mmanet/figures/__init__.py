"""Paper figures of a benchmark (issue 23), each saved as a 300-dpi PNG and a PDF (:func:`~.style.save_figure`).

* :mod:`.style` — one colour and marker per method, the same in every figure (distinct up to 16 methods);
* :mod:`.per_combination` — each method's metric per combination: dots with error bars;
* :mod:`.heatmap` — the paired Δ to the reference, methods × combinations, over a ●/○ modality matrix;
* :mod:`.deployment` — the availability sweep and the Shapley bars.
"""
