def register(sub):  # placeholder until written
    pass
