"""Gradient inversion by an honest-but-curious server: image, tabular and text attacks."""

# name (as in attacks.inversion.image_attacks, or the text attacks) -> (description, surface)
INVERSION_ATTACKS = {
    "analytic": ("first linear layer with bias inverted exactly: x = dW_i / db_i "
                 "(batch of one)", "client_updates"),
    "idlg": ("iDLG: labels from the last bias gradient, then gradient matching (Zhao et al. "
             "2020)", "client_updates"),
    "ig": ("Inverting Gradients: cosine matching + total variation, Adam (Geiping et al. 2020)",
           "client_updates"),
    "dlg": ("DLG: dummy inputs and labels matched to the gradient with L-BFGS (Zhu et al. 2019)",
            "client_updates"),
    "bag-of-words": ("text: the tokens of a batch from the rows of the embedding gradient (a "
                     "causal LM cell's own updates, or a tiny GPT-2)", "client_updates"),
    "dager": ("text: whole sequences by checking candidate tokens against the span of the first "
              "layers' gradients (Petrov et al. 2024)", "client_updates"),
}
