"""The model store's contents and which model this process serves (by name: never a server path)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from ...model import ModelStore, ModelStoreError
from ..deps import Services, services
from ..errors import public
from ..schemas import ModelInfo, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


def _list(svc: Services) -> ModelList:
    store = ModelStore(svc.settings.model_store)
    models = []
    for name in store.names():
        try:
            manifest = store.manifest(name)
        except ModelStoreError as error:  # a broken entry is listed with its reason, not hidden
            models.append(ModelInfo(name=name, version="", input_size=(0, 0), loaded=False, error=public(str(error))))
            continue
        models.append(ModelInfo(
            name=name, version=manifest.version, input_size=manifest.input_size, created=manifest.created,
            metrics=manifest.metrics, loaded=manifest.model_id == svc.predictor.model_id, model_id=manifest.model_id,
        ))
    return ModelList(loaded=svc.predictor.model_id, device=str(svc.predictor.device), models=models)


@router.get("/models", response_model=ModelList, summary="Models in the store, and the one loaded")
async def list_models(svc: Services = Depends(services)) -> ModelList:
    return await asyncio.to_thread(_list, svc)
