"""The shipped JSON Schema of lepton.yml and its generated fast checker."""
