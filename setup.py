"""fl_tff: a federated learning research framework on TensorFlow Federated.

Install into the project's virtualenv with `pip install --no-deps -e .` after the pinned
requirements (`make venv` does all of it): TFF 0.87's own pins cannot be resolved today, see
BUILD_NOTES.md.
"""

from setuptools import find_packages, setup

setup(
    name='fl_tff',
    version='0.1.0',
    description='Federated learning research framework built on TensorFlow Federated',
    packages=find_packages(include=['fl_tff', 'fl_tff.*', 'experiments', 'experiments.*']),
    python_requires='>=3.10,<3.12',
    install_requires=[
        'tensorflow-federated==0.87.0',
        'tensorflow==2.14.1',
        'tensorflow-privacy==0.9.0',
        'dp-accounting==0.4.3',
        'jax==0.4.13',
        'jaxlib==0.4.13',
        'google-vizier==0.1.11',
        'attrs==23.1.0',
        'absl-py>=1.4',
        'numpy>=1.25,<1.26',
        'scikit-learn>=1.3',
        'matplotlib>=3.8',
        'portpicker>=1.6',
        'grpcio>=1.60',
        'psutil>=5.9',
    ],
    extras_require={'test': ['pytest>=8']},
)
