"""rnnforge.vae: a recurrent variational autoencoder (Bowman et al. 2016) on the notes' cells."""
