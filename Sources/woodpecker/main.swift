print("woodpecker: not yet")
