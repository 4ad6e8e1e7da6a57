// Placeholder: replaced by the plot implementation.
