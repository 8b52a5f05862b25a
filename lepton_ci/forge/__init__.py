"""Where lepton-ci runs (GitHub Actions, GitLab CI, local) and how it talks to that forge's API."""
