"""Reading prompt sets and text passages from files, with one clear error per problem."""
