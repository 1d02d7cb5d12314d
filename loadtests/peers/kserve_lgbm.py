"""KServe's stock ModelServer serving a LightGBM booster the way KServe's lgbserver does.

Runs inside the harness's own KServe virtualenv (not ours):
    python kserve_lgbm.py --model_name bench-lgbm --model_file model.txt --http_port 8080 --grpc_port 8081
The Model subclass mirrors lgbserver's ``LightGBMModel`` (kserve python/lgbserver/lgbserver/model.py):
``Booster(params={"nthread": n}, model_file=...)``, inputs turned into a pandas DataFrame with the
booster's feature names by ``get_predict_input``, then ``Booster.predict``.
"""

from __future__ import annotations

import argparse
from typing import Any

from kserve import InferRequest, Model, ModelServer, model_server
from kserve.errors import InferenceError
from kserve.utils.utils import get_predict_input, get_predict_response
from lightgbm import Booster


class LightGBMModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, model_file: str, nthread: int) -> None:
        super().__init__(name)
        self.model_file = model_file
        self.nthread = nthread
        self._booster: Booster | None = None

    def load(self) -> bool:
        self._booster = Booster(params={"nthread": self.nthread}, model_file=self.model_file)
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Any:
        assert self._booster is not None
        try:
            instances = get_predict_input(payload, columns=self._booster.feature_name())
            result = self._booster.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--nthread", type=int, default=1)
    args, _ = parser.parse_known_args()
    model = LightGBMModel(args.model_name, args.model_file, args.nthread)
    model.load()
    ModelServer().start([model])
