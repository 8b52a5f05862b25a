"""The lepton-ci model server: Open Inference Protocol (V2) over HTTP for a loaded model."""
