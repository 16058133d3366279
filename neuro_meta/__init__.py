"""neuro_meta: meta-plasticity in rate networks with complex synapses.

Rate neurons and complex synapses (fast weight φ, consolidated weight ω, consolidation
strength λ) evolve as continuous-time ODEs; networks learn tasks with local plasticity,
and the contrastive meta-learning rule (CML) meta-learns ω and λ.
"""
from . import initializers as init
from .activations import Activation, ACTIVATIONS
from .errors import NeuroMetaError, SimulationError, UnsupportedError, ValidationError
from .kind import ModelKind
from .losses import SquaredError
from .learning import Learner, NotSettledWarning
from .network import RateNetwork
from .results import LearningResult
from .synapses import ComplexSynapse, StaticSynapse

__version__ = "0.1.0"

__all__ = [
    "Activation", "ACTIVATIONS", "ComplexSynapse", "Learner", "LearningResult", "ModelKind",
    "SquaredError",
    "NeuroMetaError", "NotSettledWarning", "RateNetwork", "SimulationError",
    "StaticSynapse", "UnsupportedError", "ValidationError", "init",
]

from . import optim
from .cml import CML, CMLResult, UnsettledEstimateWarning
from .exact import exact_meta_gradient
from .tasks import Task

__all__ += ["CML", "CMLResult", "UnsettledEstimateWarning", "Task", "exact_meta_gradient",
            "optim"]

from . import estimators

__all__ += ["estimators"]

from . import baselines, families
from .metatrain import MetaTrainer
from .dual import DualSystem

__all__ += ["DualSystem", "MetaTrainer", "baselines", "families"]

from . import warpgrad
from .warp import WarpNetwork
from .warpgrad import WarpGrad

__all__ += ["WarpGrad", "WarpNetwork", "warpgrad"]

from . import datasets
from .datasets import omniglot, omniglot_runs, one_shot_runs_error
from .families import FewShotClassification

__all__ += ["FewShotClassification", "datasets", "omniglot", "omniglot_runs",
            "one_shot_runs_error"]

from .families import WheelBandit
from .losses import MaskedSquaredError

__all__ += ["MaskedSquaredError", "WheelBandit"]

from . import vsml
from .vsml import ESTrainer, VSML

__all__ += ["ESTrainer", "VSML", "vsml"]
