"""Pipelines (inference only), installed as hf_genzoo.pipelines."""
