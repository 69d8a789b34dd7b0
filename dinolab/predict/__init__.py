"""Prediction for new images with any classifier dinolab makes (issue 18): :func:`load_predictor`,
:func:`predict_images`, and the saved frozen-feature classifiers of :mod:`dinolab.predict.saved`."""

from .predictor import FeaturePredictor, FinetunedPredictor, Predictor, ZeroShotPredictor, load_predictor
from .run import Predictions, predict_images, predictions_csv
from .saved import SavedClassifier, read_classifier, save_classifier

__all__ = ["Predictor", "FeaturePredictor", "ZeroShotPredictor", "FinetunedPredictor", "load_predictor",
           "Predictions", "predict_images", "predictions_csv", "SavedClassifier", "read_classifier", "save_classifier"]
