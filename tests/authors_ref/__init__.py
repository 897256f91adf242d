"""Reference implementations written from the model authors' own code, kept apart from spikecc's models so that
tests compare two independent readings of the same equations."""
