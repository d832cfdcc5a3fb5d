"""The paper's figures: Fig 4's budget solver, the sweep plots of Figs 3/4/6, the activation maps of
Figs 5/9 and the image panels of Figs 7-9."""
