/* autograd/cuda/layer_flash.cu: the FLASH layer of the CUDA model, h_out = h + layer(h), as a
 * sequence of room calls (layer.h): norm + shift, the projections, the attention's quadratic
 * and linear parts (combined here: att = quad_out + lin_out), the output. Also the layer's
 * views of the arena: its slices of the saved activations (layer_acts) and the backward's
 * gradient buffers (layer_grads). */
#include "layer.h"

void layer_acts(CudaModel *cm, const CudaShape *sh, int l, LayerActs *a) {
    const int d = sh->d, e = sh->e, s = sh->s, C = sh->C, H = sh->H;
    const size_t Nm = sh->Nm;
    const LayerParams *P = &cm->p.layer[l];
    float *res = ACT(cm, A_RES);
    a->l = l;
    a->P = P;
    a->D = &cm->g.layer[l];
    a->Wh_h = param_twin(cm, P->wh);
    a->Wo_h = param_twin(cm, P->wo);
    a->h = res + (size_t)l * Nm * d;
    a->h_out = res + (size_t)(l + 1) * Nm * d;
    a->xs = cm->use_bf16 ? NULL : ACT(cm, A_XS) + (size_t)l * Nm * d;   /* bf16: the twin only */
    a->stat = ACT(cm, A_NSTAT) + (size_t)l * Nm * 2;
    a->hid_u = ACT(cm, A_HID_U) + (size_t)l * Nm * H;
    a->hid = ACT(cm, A_HID) + (size_t)l * Nm * H;
    const int qk_blocks = sh->c->model == MODEL_GAU ? 2 : 4;   /* GAU: q, k; FLASH: the four */
    a->qk4 = ACT(cm, A_QK4) + (size_t)l * qk_blocks * Nm * s;
    a->sim = ACT(cm, A_SIM) + (size_t)l * Nm * C;
    a->attn = ACT(cm, A_ATTN) + (size_t)l * Nm * C;
    a->kv = ACT(cm, A_KV) + (size_t)l * (Nm / C) * s * e;
    a->att = ACT(cm, A_ATT) + (size_t)l * Nm * e;
    a->gated = ACT(cm, A_GATED) + (size_t)l * Nm * e;
    a->bias_dist = ACT(cm, A_BIAS_DIST) + (size_t)l * C;
    a->xs_h = cm->use_bf16 ? TWIN(cm, H_XS) + (size_t)l * Nm * d : NULL;
    a->hid_h = cm->use_bf16 ? TWIN(cm, H_HID) + (size_t)l * Nm * H : NULL;
    a->hid_u_h = cm->use_bf16 ? TWIN(cm, H_HID_U) + (size_t)l * Nm * H : NULL;
    a->qk4_h = cm->use_bf16 ? TWIN(cm, H_QK4) + (size_t)l * qk_blocks * Nm * s : NULL;
    a->attn_h = cm->use_bf16 ? TWIN(cm, H_ATTN) + (size_t)l * Nm * C : NULL;
    a->kv_h = cm->use_bf16 ? TWIN(cm, H_KV) + (size_t)l * (Nm / C) * s * e : NULL;
    a->gated_h = cm->use_bf16 ? TWIN(cm, H_GATED) + (size_t)l * Nm * e : NULL;
    a->att_h = cm->use_bf16 ? TWIN(cm, H_ATT) + (size_t)l * Nm * e : NULL;
    a->att_out = a->att_h ? (void *)a->att_h : (void *)a->att;
    a->att_type = a->att_h ? CUDA_R_16BF : CUDA_R_32F;
    const int taylor = sh->c->linear_attn == LINEAR_TAYLOR;
    const TaylorDims t = taylor_dims(sh->c);
    a->tkv = taylor ? ACT(cm, A_TKV) + (size_t)l * (Nm / C) * t.SE : NULL;
    a->tkv_h = taylor && cm->use_bf16 ? TWIN(cm, H_TKV) + (size_t)l * (Nm / C) * t.SE : NULL;
    a->ty = taylor ? ACT(cm, A_TY) + (size_t)l * Nm * e : NULL;
    a->tden = taylor ? ACT(cm, A_TDEN) + (size_t)l * Nm : NULL;
}

void layer_grads(CudaModel *cm, LayerGrads *g) {
    g->col = ACT(cm, A_COL_SCRATCH);
    g->row = ACT(cm, A_ROW_SCRATCH);
    g->d_res = ACT(cm, A_D_RES); g->d_xs = ACT(cm, A_D_XS); g->d_hid = ACT(cm, A_D_HID);
    g->d_qk4 = ACT(cm, A_D_QK4); g->d_att = ACT(cm, A_D_ATT); g->d_gated = ACT(cm, A_D_GATED);
    g->d_kv = ACT(cm, A_D_KV); g->dsim = ACT(cm, A_DSIM);
    g->d_res_h = TWIN(cm, H_D_RES); g->d_att_h = TWIN(cm, H_D_ATT); g->d_kv_h = TWIN(cm, H_D_KV);
    g->dsim_h = TWIN(cm, H_DSIM); g->d_hid_h = TWIN(cm, H_D_HID);
    g->d_gated_h = TWIN(cm, H_D_GATED); g->d_qk4_h = TWIN(cm, H_D_QK4);
    g->h_type = cm->use_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    g->d_gated_out = g->d_gated_h ? (void *)g->d_gated_h : (void *)g->d_gated;
    g->d_hid_out = g->d_hid_h ? (void *)g->d_hid_h : (void *)g->d_hid;
    g->d_qk4_out = g->d_qk4_h ? (void *)g->d_qk4_h : (void *)g->d_qk4;
    g->dsim_out = g->dsim_h ? (void *)g->dsim_h : (void *)g->dsim;
    g->qk4_el = g->d_qk4_h ? 2 : 4;
}

void flash_layer_forward(CudaModel *cm, const CudaShape *sh, int l, Marks *mk) {
    cudaStream_t st = cm->st;
    LayerActs a;
    layer_acts(cm, sh, l, &a);
    norm_shift_forward(cm, &a, sh, mk, st);
    project_forward(cm, &a, sh, mk, st);
    /* att = quad_out + lin_out: the quadratic part writes it, the linear part adds */
    attn_quad_forward(cm, &a, sh, 0, st);
    if (sh->c->linear_attn == LINEAR_TAYLOR) attn_taylor_forward(cm, &a, sh, 1, st);
    else attn_linear_forward(cm, &a, sh, 1, st);
    MARK(P_ATTENTION);
    output_forward(cm, &a, sh, mk, st);
}

void flash_layer_backward(CudaModel *cm, const CudaShape *sh, const LayerGrads *g, int l, Marks *mk) {
    cudaStream_t st = cm->st;
    LayerActs a;
    layer_acts(cm, sh, l, &a);
    output_backward(cm, &a, g, sh, mk, st);
    /* both parts read d_att; the linear part writes dv, the quadratic part adds its share */
    if (sh->c->linear_attn == LINEAR_TAYLOR) attn_taylor_backward(cm, &a, g, sh, 0, st);
    else attn_linear_backward(cm, &a, g, sh, 0, st);
    attn_quad_backward(cm, &a, g, sh, 1, st);
    MARK(P_PHASES + P_ATTENTION);
    project_backward(cm, &a, g, sh, mk, st);
    norm_shift_backward(cm, &a, g, sh, mk, st);
}
