"""Pure building blocks shared by every pool: they import nothing above them."""
